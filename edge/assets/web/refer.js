// The edge's "Refer to hub" form, in two steps: the form is first sent to
// /api/v1/referrals/preview, which answers with exactly what would cross to the hub (or why it
// may not: a name, id or pathology number typed into the specimen or question); the doctor
// reads it, then sends it to /api/v1/referrals and the referral's page opens. A file of its own,
// not inline, so that the Content-Security-Policy can refuse every inline script.
(function () {
  "use strict";
  const form = document.getElementById("refer-form");
  const result = document.getElementById("refer-result");
  const review = document.getElementById("refer-review");
  const crosses = document.getElementById("refer-crosses");

  function body() {
    const f = form;
    return {
      case_number: f.case_number.value, patient_name: f.patient_name.value, patient_id: f.patient_id.value,
      age_years: f.age_years.value === "" ? null : parseInt(f.age_years.value, 10), sex: f.sex.value,
      specimen: f.specimen.value, question: f.question.value, urgency: f.urgency.value,
      slide_ids: Array.from(f.querySelectorAll("input[name=slide]:checked")).map(function (c) { return c.value; }),
    };
  }

  function post(url) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: window.grassroots.csrfHeaders(true), body: JSON.stringify(body()),
    }).then(function (r) {
      return r.text().then(function (text) {
        let json = null;
        try { json = JSON.parse(text); } catch (e) { /* a body that is not JSON is shown as text */ }
        return { ok: r.ok, json: json, text: text };
      });
    });
  }

  function refuse(what, answer) {
    result.textContent = what + ": " + ((answer.json && answer.json.error) || answer.text || "no answer");
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    result.textContent = "";
    post("/api/v1/referrals/preview").then(function (answer) {
      if (!answer.ok) { review.hidden = true; refuse("Not referred", answer); return; }
      crosses.textContent = JSON.stringify(answer.json.crosses, null, 2);
      review.hidden = false;
      document.getElementById("refer-send").focus();
    }).catch(function () { result.textContent = "Not referred: the edge did not answer"; });
  });

  // Any change to the form means the reviewed text is no longer what would be sent.
  form.addEventListener("input", function () { review.hidden = true; });
  document.getElementById("refer-edit").addEventListener("click", function () { review.hidden = true; });
  document.getElementById("refer-send").addEventListener("click", function () {
    post("/api/v1/referrals").then(function (answer) {
      if (answer.ok) window.location = "/referrals/" + answer.json.referral.referral_id;
      else refuse("Not referred", answer);
    }).catch(function () { result.textContent = "Not referred: the edge did not answer"; });
  });
})();
