// The console's few enhancements. Every page works without this file: forms post, links load.
(function () {
  "use strict";

  // Copy buttons stay hidden without script; with it, they copy the field they name.
  function copyButtons() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      var field = document.getElementById(button.dataset.copy);
      var status = document.querySelector(".copied");
      button.hidden = false;
      button.addEventListener("click", function () {
        function done() { if (status) status.textContent = "Copied to the clipboard."; }
        function byHand() {
          field.select();
          try { document.execCommand("copy"); done(); } catch (e) {
            if (status) status.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
          }
        }
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(field.value).then(done, byHand);
        } else {
          byHand();
        }
      });
    });
  }

  // The campaign advice and channel, asked of the server as the seller types: the API's own rules.
  function liveAdvice() {
    var form = document.querySelector("form[data-advice]");
    if (!form) return;
    var channel = document.getElementById("channel-out");
    var box = document.getElementById("campaign-advice");
    var timer = null;
    function show(advice) {
      channel.textContent = advice.channel || "—";
      var lines = advice.warnings.slice();
      if (advice.problems.utm_campaign) lines.unshift("utm_campaign: " + advice.problems.utm_campaign);
      if (advice.problems.utm_source) lines.unshift("utm_source: " + advice.problems.utm_source);
      box.replaceChildren();
      if (!lines.length) return;
      var list = document.createElement("ul");
      lines.forEach(function (line) {
        var item = document.createElement("li");
        item.textContent = line;
        list.append(item);
      });
      box.append(list);
    }
    function ask() {
      var params = new URLSearchParams();
      ["utm_source", "utm_campaign"].forEach(function (name) {
        var value = form.elements[name].value.trim();
        if (value) params.set(name, value);
      });
      fetch(form.dataset.advice + "?" + params.toString(), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (advice) { if (advice) show(advice); })
        .catch(function () { /* the advice is a help, never in the way */ });
    }
    var preview = document.getElementById("utm-preview");
    var fields = ["utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term"];
    form.addEventListener("input", function (event) {
      var name = event.target.name;
      if (preview && fields.indexOf(name) >= 0) {
        var query = new URLSearchParams();
        fields.forEach(function (field) {
          var value = form.elements[field].value.trim();
          if (value) query.set(field, value);
        });
        preview.textContent = query.toString() || "—";
      }
      if (name !== "utm_source" && name !== "utm_campaign") return;
      clearTimeout(timer);
      timer = setTimeout(ask, 200);
    });
  }

  // Valid and invalid clicks per day, drawn by the vendored uPlot from the JSON the page carries.
  function chart() {
    var box = document.getElementById("traffic-chart");
    var data = document.getElementById("traffic-series");
    if (!box || !data || !window.uPlot) return;
    var series = JSON.parse(data.textContent);
    // Days are calendar dates in the report's time zone: drawn at UTC midnight and labelled in UTC.
    var xs = series.days.map(function (d) { return Date.parse(d + "T00:00:00Z") / 1000; });
    function size() {
      var width = Math.max(box.clientWidth, 260);
      return { width: width, height: width < 500 ? 220 : 300 };
    }
    var options = Object.assign(size(), {
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      scales: {
        x: { time: true },
        y: { range: function (u, min, max) { return [0, Math.max(max, 4)]; } },
      },
      series: [
        { label: "Day", value: "{YYYY}-{MM}-{DD}" },
        { label: "Valid", stroke: "#1a7f37", width: 2, fill: "rgba(26, 127, 55, 0.08)" },
        { label: "Invalid", stroke: "#b42318", width: 2, dash: [6, 4] },
      ],
      axes: [{ stroke: "#57606a" }, { stroke: "#57606a" }],
    });
    var plot = new uPlot(options, [xs, series.valid, series.invalid], box);
    // One day alone would get a scale of years around it: half a day each side instead.
    if (xs.length === 1) plot.setScale("x", { min: xs[0] - 43200, max: xs[0] + 43200 });
    var pending = null;
    window.addEventListener("resize", function () {
      cancelAnimationFrame(pending);
      pending = requestAnimationFrame(function () { plot.setSize(size()); });
    });
  }

  function start() {
    copyButtons();
    liveAdvice();
    chart();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
