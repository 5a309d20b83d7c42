// Draws each chart the `chart` macro declared, from the JSON beside it, with uPlot.
(function () {
  for (const box of document.querySelectorAll(".chart-box")) {
    const data = JSON.parse(document.getElementById(box.id + "-data").textContent);
    const width = Math.max(300, box.clientWidth || 600);
    const series = [{}].concat(
      data.series.map((s, i) => ({
        label: s.label,
        stroke: ["#1a7f37", "#0969da", "#cf222e", "#9a6700"][i % 4],
        width: 2,
        paths: data.steps ? uPlot.paths.stepped({ align: 1 }) : undefined,
      }))
    );
    const opts = { width, height: 200, series, scales: { x: { time: true } }, axes: [{}, {}] };
    if (data.steps) opts.scales.y = { range: [-0.1, 1.1] };
    new uPlot(opts, [data.x].concat(data.series.map((s) => s.values)), box);
  }
})();
