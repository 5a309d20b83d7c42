// The phone page's few behaviours: the cabinets' map, the list around the phone's location when the
// browser shares it, forms that must be sent once (the button is disabled after the first tap), and
// WeChat's pay sheet for a swap paid by WeChat Pay (the swap goes on once WeChat tells the server).
(function () {
  "use strict";
  const prefix = "/app";

  function drawMap() {
    const holder = document.getElementById("map");
    const source = document.getElementById("map-data");
    if (!holder || !source || typeof L === "undefined") return;
    const data = JSON.parse(source.textContent);
    const map = L.map(holder, { keyboard: true, zoomControl: true });
    if (data.tile_url) {
      L.tileLayer(data.tile_url, { attribution: data.attribution || "", maxZoom: 19 }).addTo(map);
    }
    const bounds = [];
    for (const c of data.cabinets) {
      const label = `${c.name}: ${c.ready} ready pack${c.ready === 1 ? "" : "s"}${c.usable ? "" : ", cannot swap now"}`;
      const icon = L.divIcon({ className: `map-cabinet${c.usable ? "" : " unusable"}`, iconSize: [28, 28], html: String(c.ready) });
      const marker = L.marker([c.lat, c.lon], { icon, title: label, alt: label, keyboard: true }).addTo(map);
      const link = document.createElement("a");
      link.href = `${prefix}/c/${encodeURIComponent(c.id)}`;
      link.textContent = label;
      marker.bindPopup(link);
      bounds.push([c.lat, c.lon]);
    }
    if (data.centre) {
      bounds.push(data.centre);
      if (document.getElementById("nearby")?.dataset.fromPhone === "yes") {
        L.marker(data.centre, {
          icon: L.divIcon({ className: "map-you", iconSize: [14, 14] }), title: "You are here", alt: "You are here",
          zIndexOffset: -1000, // under the cabinets' markers, which are what the rider taps
        }).addTo(map);
      }
    }
    if (bounds.length) map.fitBounds(bounds, { padding: [24, 24], maxZoom: 15 });
    else map.setView([0, 0], 2);
  }

  function nearPhone() {
    const nearby = document.getElementById("nearby");
    if (!nearby || nearby.dataset.fromPhone === "yes" || !navigator.geolocation) return;
    navigator.geolocation.getCurrentPosition(
      (position) => {
        const near = `${position.coords.latitude.toFixed(6)},${position.coords.longitude.toFixed(6)}`;
        htmx.ajax("GET", `${prefix}/nearby?near=${encodeURIComponent(near)}`, { target: "#nearby", swap: "outerHTML" });
      },
      () => {}, // refused or unknown: the list stays around the city centre
      { enableHighAccuracy: false, timeout: 10000, maximumAge: 60000 },
    );
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-once")) return;
    if (form.dataset.sent === "yes") {
      event.preventDefault(); // a second tap: the first is on its way
      return;
    }
    form.dataset.sent = "yes";
    const button = form.querySelector('button[type="submit"]');
    if (button) {
      // After this tick, so the submission goes out first.
      setTimeout(() => {
        button.disabled = true;
        if (button.dataset.busy) button.textContent = button.dataset.busy;
      });
    }
  });

  document.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest("[data-pay-sheet]") : null;
    if (!button) return;
    if (typeof WeixinJSBridge === "undefined") {
      button.parentElement.querySelector("[data-pay-sheet-hint]")?.removeAttribute("hidden");
      return;
    }
    // The signed parameters our server got from WeChat Pay for this payment; the outcome reaches the
    // server from WeChat itself, and the page follows the swap as it goes on.
    WeixinJSBridge.invoke("getBrandWCPayRequest", JSON.parse(button.dataset.paySheet), () => {});
  });

  // Each time the list arrives (the page, or the list around the phone), its map is drawn.
  htmx.onLoad((content) => {
    if (content.id === "nearby" || content.querySelector?.("#nearby")) drawMap();
  });
  nearPhone();
})();
