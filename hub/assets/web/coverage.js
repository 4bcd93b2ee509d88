// The coverage pages' charts: each .trend-chart element names its trend API (data-api); this
// draws three small uPlot charts from it — slides screened (per 10,000 people when the
// catchment is known), QC failure and referral rates, and median turnaround. Hidden ("<5")
// figures are gaps, never zeros. The tables on the page hold the same figures.
(function () {
  "use strict";
  const say = window.grassroots.say;
  if (typeof uPlot === "undefined") return;

  function day(text) {
    return Date.parse(text + "T00:00:00Z") / 1000;
  }

  function value(v) {
    return typeof v === "number" && isFinite(v) ? v : null;
  }

  function chart(box, title, x, series, yLabel) {
    const holder = document.createElement("figure");
    holder.className = "trend";
    const caption = document.createElement("figcaption");
    caption.textContent = title;
    holder.appendChild(caption);
    box.appendChild(holder);
    const width = Math.max(260, Math.min(box.clientWidth || 600, 1000));
    const data = [x].concat(series.map(function (s) { return s.values; }));
    new uPlot({
      width: width,
      height: 180,
      scales: { x: { time: true } },
      axes: [{}, { label: yLabel, size: 60 }],
      series: [{ label: say("Time") }].concat(series.map(function (s) {
        return { label: s.label, stroke: s.colour, width: 2, points: { show: true }, spanGaps: false };
      })),
    }, data, holder);
  }

  function draw(box, trend) {
    const points = trend.points || [];
    box.textContent = "";
    if (points.length === 0) return;
    const x = points.map(function (p) { return day(p.first_day); });
    const perPeople = trend.population ? true : false;
    chart(box, perPeople ? say("Slides screened per 10,000 people") : say("Slides screened"), x, [{
      label: perPeople ? say("per 10,000") : say("screened"),
      colour: "#1f6f5c",
      values: points.map(function (p) {
        return perPeople ? value(p.screened_per_10k) : value(p.slides_screened);
      }),
    }], perPeople ? say("per 10,000") : say("slides"));
    chart(box, say("Quality-control failures and referrals (% of screened)"), x, [
      { label: say("QC failure"), colour: "#b3261e", values: points.map(function (p) {
        const v = value(p.qc_failure_rate); return v === null ? null : v * 100; }) },
      { label: say("referred"), colour: "#3b5ba5", values: points.map(function (p) {
        const v = value(p.referral_rate); return v === null ? null : v * 100; }) },
    ], "%");
    chart(box, say("Median referral turnaround (hours, bucket bound)"), x, [{
      label: say("median"), colour: "#7a4f9a",
      values: points.map(function (p) { return value(p.turnaround_median_hours); }),
    }], say("hours"));
    const demo = points.some(function (p) { return p.demo_days > 0; });
    if (demo) {
      const note = document.createElement("p");
      note.className = "demo";
      note.textContent = say("Includes invented demo figures.");
      box.appendChild(note);
    }
    box.dataset.points = String(points.length);
  }

  document.querySelectorAll(".trend-chart[data-api]").forEach(function (box) {
    window.grassroots.send(box.dataset.api)
      .then(function (trend) { draw(box, trend); }, function (error) {
        // The table beside it has the figures; the chart says why it is missing.
        window.grassroots.showError(box, say("The chart could not be loaded: ") + error.message);
      });
  });
})();
