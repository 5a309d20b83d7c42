// The network map: one marker per station, its class (shape and colour) and its name saying its state;
// its popup counts the station's cabinets by state and links to them in the table.
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
    const list = Object.entries(m.counts).map(([state, n]) => `<li>${n} ${esc(data.labels[state])}</li>`).join("");
    const table = `${data.table}?city=${encodeURIComponent(data.city)}&station=${encodeURIComponent(m.id)}`;
    const popup = document.createElement("div");
    popup.innerHTML = `<strong></strong><ul>${list}</ul><a href="${esc(table)}">Its cabinets</a>`;
    popup.querySelector("strong").textContent = label;
    marker.bindPopup(popup);
    marker.getElement()?.setAttribute("data-station", m.id);
    marker.getElement()?.setAttribute("data-state", m.state);
    bounds.push([m.lat, m.lon]);
  }
  if (bounds.length) map.fitBounds(bounds, { padding: [30, 30], maxZoom: 15 });
  else map.setView([0, 0], 2);
})();
