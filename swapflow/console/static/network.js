// The network map: one marker per station, its class (shape and colour) and its name saying its state.
(function () {
  const esc = (s) => String(s).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
  const data = JSON.parse(document.getElementById("map-data").textContent);
  const map = L.map("map", { keyboard: true });
  if (data.tile_url) {
    L.tileLayer(data.tile_url, { attribution: data.attribution || "", maxZoom: 19 }).addTo(map);
  }
  const bounds = [];
  for (const m of data.markers) {
    const label = `${m.name}: ${data.labels[m.state]}`;
    const icon = L.divIcon({ className: `map-marker ${m.state.replace(/_/g, "-")}`, iconSize: [18, 18] });
    const marker = L.marker([m.lat, m.lon], { icon, title: label, alt: label, keyboard: true }).addTo(map);
    const list = m.cabinets.map((c) => `<li><a href="/console/cabinets/${encodeURIComponent(c.id)}">${esc(c.id)}</a>: ${esc(data.labels[c.state])}</li>`).join("");
    const popup = document.createElement("div");
    popup.innerHTML = `<strong></strong><ul>${list}</ul>`;
    popup.querySelector("strong").textContent = label;
    marker.bindPopup(popup);
    marker.getElement()?.setAttribute("data-station", m.id);
    marker.getElement()?.setAttribute("data-state", m.state);
    bounds.push([m.lat, m.lon]);
  }
  if (bounds.length) map.fitBounds(bounds, { padding: [30, 30], maxZoom: 15 });
  else map.setView([0, 0], 2);
})();
