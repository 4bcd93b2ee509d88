// One WebSocket per viewer to the edge's renderer (`/studies/{study}/series/{series}/render`
// at the edge; at the hub, the consult's relay to the referring edge, which renders): the page
// sends each view's wishes (the query a rendered resource takes) and receives frames.
// The edge keeps only each view's latest wish, so a view that falls behind skips frames; here
// a view counts as settled when its latest wish has been answered. A socket that drops (the
// edge restarted, the network blinked) is opened again and each view's latest wish sent again;
// one refused before it opened is asked about with a plain request (a browser does not show a
// WebSocket's refusal), and a session that ended or a role that no longer admits the viewer
// stops the retries with the reason instead of knocking forever.
(function () {
  "use strict";
  window.grassrootsRenderSocket = function (address, handlers) {
    let socket = null;
    let seq = 0;
    let ended = false;
    let retry = 500;
    const latest = {};   // view -> its latest wish
    const unsent = {};   // view -> a wish made while the socket was not open
    function sendNow(wish) {
      if (socket && socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify(wish)); delete unsent[wish.view]; }
      else unsent[wish.view] = wish;
    }
    function retryLater() {
      handlers.refused({ error: "the connection to the renderer was lost; trying again", lost: true });
      setTimeout(open, retry);
      retry = Math.min(retry * 2, 10000);
    }
    // The same address without the upgrade: the server's guard answers it as it answered the
    // socket (a redirect to sign in, 401 or 403), or refuses the missing upgrade (400) when the
    // viewer is still admitted and the socket failed for another reason.
    function askWhyRefused() {
      fetch(address, { credentials: "same-origin", redirect: "manual" }).then(function (response) {
        if (response.type === "opaqueredirect" || response.status === 401) {
          ended = true;
          handlers.refused({ error: "your session has ended: sign in again", ended: true });
          return;
        }
        // Not allowed, not there, answered or no volume: final, with the server's reason.
        if ([403, 404, 410, 422].indexOf(response.status) >= 0) {
          ended = true;
          response.text().then(function (text) {
            let reason = "this series cannot be viewed here any more (" + response.status + ")";
            try { reason = JSON.parse(text).error || reason; } catch (notJson) {
              const page = new DOMParser().parseFromString(text, "text/html").querySelector(".error, p");
              if (page && page.textContent.trim()) reason = page.textContent.trim();
            }
            handlers.refused({ error: reason, ended: true });
          });
          return;
        }
        retryLater();
      }, retryLater);
    }
    function open() {
      let opened = false;
      socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + address);
      socket.binaryType = "arraybuffer";
      socket.addEventListener("open", function () {
        opened = true;
        retry = 500;
        Object.keys(latest).forEach(function (view) { if (latest[view].answered !== true) sendNow(latest[view].wish); });
      });
      socket.addEventListener("message", function (event) {
        if (typeof event.data === "string") {
          let answer;
          try { answer = JSON.parse(event.data); } catch (notJson) { answer = { error: event.data }; }
          if (answer.ended) ended = true;
          if (answer.view && latest[answer.view] && latest[answer.view].wish.seq === answer.seq) latest[answer.view].answered = true;
          handlers.refused(answer);
          return;
        }
        const length = new DataView(event.data).getUint32(0);
        const header = JSON.parse(new TextDecoder().decode(new Uint8Array(event.data, 4, length)));
        if (latest[header.view] && latest[header.view].wish.seq === header.seq) latest[header.view].answered = true;
        handlers.frame(header, new Blob([new Uint8Array(event.data, 4 + length)], { type: "image/jpeg" }));
      });
      socket.addEventListener("close", function () {
        if (ended) return;
        if (opened) retryLater();
        else askWhyRefused();
      });
    }
    open();
    return {
      // Sends a wish for `view`; answers come to the handlers with its sequence number.
      send: function (view, kind, query) {
        seq += 1;
        const wish = { view: view, seq: seq, kind: kind, query: query };
        latest[view] = { wish: wish, answered: false };
        sendNow(wish);
        return seq;
      },
      // Whether `view`'s latest wish has had its answer.
      settled: function (view) { return !latest[view] || latest[view].answered === true; },
    };
  };
})();
