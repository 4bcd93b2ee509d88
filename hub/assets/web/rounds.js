// The hub's rounds page: the validation accuracy of each finished round's model (and of its
// base) as a uPlot chart, refreshed every five seconds from /api/v1/rounds. The table beside it
// is rendered by the server; this file only draws.
(function () {
  "use strict";
  const say = window.grassroots.say;
  const box = document.getElementById("round-chart");
  if (!box || typeof uPlot === "undefined") return;
  let plot = null;

  function series(rounds) {
    const done = rounds
      .filter(function (r) { return r.metrics && r.metrics.validation_accuracy !== undefined; })
      .sort(function (a, b) { return a.id - b.id; });
    return [
      done.map(function (r) { return r.id; }),
      done.map(function (r) { return r.metrics.validation_accuracy * 100; }),
      done.map(function (r) {
        const base = r.metrics.base_validation_accuracy;
        return base === undefined ? null : base * 100;
      }),
    ];
  }

  function draw(data) {
    if (data[0].length === 0) return;
    const width = Math.max(300, box.clientWidth || 600);
    if (plot) {
      plot.setData(data);
      return;
    }
    box.textContent = "";
    plot = new uPlot({
      width: width,
      height: 260,
      scales: { x: { time: false }, y: { range: [0, 100] } },
      axes: [{ label: say("round") }, { label: say("% of validation tiles") }],
      series: [
        { label: say("round") },
        { label: say("after the round"), stroke: "#1f6f43", width: 2, points: { show: true } },
        { label: say("its base"), stroke: "#999", dash: [6, 4] },
      ],
    }, data, box);
    box.dataset.points = String(data[0].length);
  }

  function refresh() {
    // A failure says why beside the chart; the next refresh tries again and clears it.
    window.grassroots.send(box.dataset.api).then(function (body) {
      window.grassroots.showError(box, "");
      draw(series(body.rounds || []));
    }, function (error) {
      window.grassroots.showError(box, say("The chart could not be loaded: ") + error.message);
    });
  }

  refresh();
  setInterval(refresh, 5000);
})();
