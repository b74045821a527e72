// deployctl dashboard: progressive enhancement only. Without it every page still works (forms submit,
// a reload shows the latest state). With it: the matrix refreshes itself, filters apply on change,
// commands copy with one click and the timeline chart is drawn.
(function () {
  "use strict";

  function poll(box) {
    var url = box.getAttribute("data-poll");
    var every = Math.max(1, parseInt(box.getAttribute("data-every") || "3", 10)) * 1000;
    var status = document.getElementById("poll-status");
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
        .then(function (html) {
          var current = box.querySelector("#matrix");
          var focused = document.activeElement && current && current.contains(document.activeElement);
          if (!focused) {  // never pull content out from under a keyboard user
            var holder = document.createElement("div");
            holder.innerHTML = html;
            var fresh = holder.querySelector("#matrix");
            if (fresh && current && fresh.innerHTML !== current.innerHTML) { current.replaceWith(fresh); }
          }
          if (status) { status.textContent = "Live: updated " + new Date().toLocaleTimeString(); }
        })
        .catch(function (e) { if (status) { status.textContent = "Live updates paused: " + e.message; } })
        .finally(function () { setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }

  function autoFilter(form) {
    var button = form.querySelector("button[type=submit]");
    form.querySelectorAll("select").forEach(function (s) {
      s.addEventListener("change", function () { form.requestSubmit ? form.requestSubmit() : form.submit(); });
    });
    if (button && !form.querySelector("input")) { button.classList.add("vh"); }
  }

  function copyButtons() {
    document.querySelectorAll("button[data-copy]").forEach(function (b) {
      b.addEventListener("click", function () {
        var input = document.getElementById(b.getAttribute("data-copy"));
        if (!input) { return; }
        input.select();
        var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 1500); };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(input.value).then(done, function () { document.execCommand("copy"); done(); });
        } else { document.execCommand("copy"); done(); }
      });
    });
  }

  function chart() {
    var holder = document.getElementById("timeline");
    var data = document.getElementById("timeline-data");
    if (!holder || !data || !window.Plotly) { return; }
    var fig = JSON.parse(data.textContent);
    window.Plotly.newPlot(holder, fig.data, fig.layout, { displaylogo: false, responsive: true });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
    document.querySelectorAll("form.filters").forEach(autoFilter);
    copyButtons();
    chart();
  });
})();
