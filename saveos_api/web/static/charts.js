// Draws the host page's snapshot charts with uPlot from the JSON the page carries; the
// snapshot table above is the same data for readers without JavaScript.
(function () {
  "use strict";
  function sizeText(v) {
    if (v == null) return "";
    var units = ["B", "kB", "MB", "GB", "TB", "PB"], i = 0;
    while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return (i ? v.toFixed(1) : v.toFixed(0)) + " " + units[i];
  }
  function durationText(v) {
    if (v == null) return "";
    if (v < 60) return v.toFixed(1) + " s";
    if (v < 3600) return (v / 60).toFixed(1) + " min";
    return (v / 3600).toFixed(1) + " h";
  }
  function width() {
    var box = document.getElementById("charts").clientWidth || 960;
    return Math.max(320, Math.min(720, Math.floor(box / 2) - 40));
  }
  function draw() {
    var source = document.getElementById("snapshot-series");
    if (!source || typeof uPlot === "undefined") return;
    var s = JSON.parse(source.textContent);
    document.getElementById("charts").hidden = false;
    var sizeEl = document.getElementById("chart-size");
    var durEl = document.getElementById("chart-duration");
    var sizeAxis = { values: function (u, vals) { return vals.map(sizeText); }, size: 84 };
    new uPlot({
      width: width(), height: 220, legend: { live: false },
      series: [{}, { label: "original", stroke: "#2f5bd3", width: 2, value: function (u, v) { return sizeText(v); } },
                   { label: "deduplicated", stroke: "#1a7f37", width: 2, value: function (u, v) { return sizeText(v); } }],
      axes: [{}, sizeAxis]
    }, [s.t, s.original, s.deduplicated], sizeEl);
    new uPlot({
      width: width(), height: 220, legend: { live: false },
      series: [{}, { label: "duration", stroke: "#8250df", width: 2, value: function (u, v) { return durationText(v); } }],
      axes: [{}, { values: function (u, vals) { return vals.map(durationText); }, size: 70 }]
    }, [s.t, s.duration], durEl);
    document.getElementById("charts").setAttribute("data-drawn", "true");
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
