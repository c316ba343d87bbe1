// Draws the page's Plotly charts from its JSON block and refreshes fragments without a reload.
// No inline scripts: the CSP allows only files from this origin.
(function () {
  "use strict";
  var config = {responsive: true, displaylogo: false, displayModeBar: false};

  function draw(charts) {
    if (typeof Plotly === "undefined") { return; }
    Object.keys(charts).forEach(function (name) {
      var el = document.getElementById("chart-" + name);
      if (el) { Plotly.react(el, charts[name].data, charts[name].layout, config); }
    });
  }

  function refresh(root) {
    fetch(root.dataset.refresh, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        if (r.status === 401) { window.location.assign("/ui/signin"); return null; }
        return r.ok ? r.json() : null;
      })
      .then(function (payload) {
        if (!payload) { return; }
        Object.keys(payload.fragments).forEach(function (id) {
          var el = document.getElementById(id);
          if (el) { el.innerHTML = payload.fragments[id]; }  // server-rendered, escaped by Jinja
        });
        draw(payload.charts);
        var stamp = document.getElementById("refreshed");
        if (stamp) { stamp.textContent = "Updated " + new Date().toLocaleTimeString(); }
      })
      .catch(function () { /* offline for a moment: the next tick tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var data = document.getElementById("chart-data");
    if (data) { draw(JSON.parse(data.textContent)); }
    var root = document.querySelector("[data-refresh]");
    if (root) {
      var seconds = Math.max(2, parseInt(root.dataset.seconds, 10) || 30);
      window.setInterval(function () { if (!document.hidden) { refresh(root); } }, seconds * 1000);
    }
  });
}());
