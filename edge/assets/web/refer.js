// The edge's "Refer to hub" form, in two steps: the form is first sent to
// /api/v1/referrals/preview, which answers with exactly what would cross to the hub (or why it
// may not: a name, id or pathology number typed into the specimen or question); the doctor
// reads it, then sends it to /api/v1/referrals and the referral's page opens. A file of its own,
// not inline, so that the Content-Security-Policy can refuse every inline script.
(function () {
  "use strict";
  const form = document.getElementById("refer-form");
  const review = document.getElementById("refer-review");
  const crosses = document.getElementById("refer-crosses");

  function body() {
    const f = form;
    return {
      case_number: f.case_number.value, patient_name: f.patient_name.value, patient_id: f.patient_id.value,
      age_years: f.age_years.value === "" ? null : parseInt(f.age_years.value, 10), sex: f.sex.value,
      specimen: f.specimen.value, question: f.question.value, urgency: f.urgency.value,
      slide_ids: Array.from(f.querySelectorAll("input[name=slide]:checked")).map(function (c) { return c.value; }),
      study_uids: Array.from(f.querySelectorAll("input[name=study]:checked")).map(function (c) { return c.value; }),
    };
  }

  const say = window.grassroots.say;
  function post(url) {
    return window.grassroots.send(url, { method: "POST", json: body() });
  }

  // The server's reason (or that the edge did not answer), beside the button that was pressed.
  function refuse(button) {
    return function (error) {
      review.hidden = button.id !== "refer-send";
      window.grassroots.showError(button, { message: say("Not referred: ") + error.message, status: error.status });
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    window.grassroots.showError(button, "");
    post("/api/v1/referrals/preview").then(function (answer) {
      crosses.textContent = JSON.stringify(answer.crosses, null, 2);
      review.hidden = false;
      document.getElementById("refer-send").focus();
    }, refuse(button));
  });

  // Any change to the form means the reviewed text is no longer what would be sent.
  form.addEventListener("input", function () { review.hidden = true; });
  document.getElementById("refer-edit").addEventListener("click", function () { review.hidden = true; });
  document.getElementById("refer-send").addEventListener("click", function (event) {
    window.grassroots.showError(event.target, "");
    post("/api/v1/referrals").then(function (answer) {
      window.location = "/referrals/" + answer.referral.referral_id;
    }, refuse(event.target));
  });
})();
