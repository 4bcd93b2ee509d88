// Shared by every page of both nodes: this session's CSRF token (node/web/src/csrf.rs), read
// from the grassroots_csrf cookie, added to every form that posts and offered to the pages'
// scripts as grassroots.csrfHeaders().
(function () {
  "use strict";
  function token() {
    const match = document.cookie.match(/(?:^|;\s*)grassroots_csrf=([0-9a-f]+)/);
    return match ? match[1] : "";
  }
  window.grassroots = {
    csrfToken: token,
    // Headers for fetch(): the token, and the content type when a JSON body goes with it.
    csrfHeaders: function (json) {
      const headers = { "x-csrf-token": token() };
      if (json) headers["content-type"] = "application/json";
      return headers;
    },
  };
  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") return;
    let input = form.querySelector("input[name=csrf]");
    if (!input) {
      input = document.createElement("input");
      input.type = "hidden";
      input.name = "csrf";
      form.appendChild(input);
    }
    input.value = token();
  }, true);
})();
