// The edge's "Refer to hub" form: sends the referral as JSON to /api/v1/referrals and opens the
// referral's page, or shows why it was not referred. A file of its own, not inline, so that the
// Content-Security-Policy can refuse every inline script.
document.getElementById("refer-form").addEventListener("submit", function (event) {
  event.preventDefault();
  const f = event.target;
  const body = {
    case_number: f.case_number.value, patient_name: f.patient_name.value, patient_id: f.patient_id.value,
    age_years: f.age_years.value === "" ? null : parseInt(f.age_years.value, 10), sex: f.sex.value,
    specimen: f.specimen.value, question: f.question.value, urgency: f.urgency.value,
    slide_ids: Array.from(f.querySelectorAll("input[name=slide]:checked")).map(function (c) { return c.value; }),
  };
  fetch("/api/v1/referrals", { method: "POST", credentials: "same-origin", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })
    .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, j: j }; }); })
    .then(function (a) {
      if (a.ok) window.location = "/referrals/" + a.j.referral.referral_id;
      else document.getElementById("refer-result").textContent = "Not referred: " + (a.j.error || "error");
    });
});
