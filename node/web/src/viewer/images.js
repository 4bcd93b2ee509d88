// A series' pictures one at a time, each rendered where the page's socket leads (at the hub:
// by the referring edge, relayed): scroll with the wheel, the arrow keys or the slider; window
// presets. Only the latest wish is kept by the renderer, so fast scrolling skips pictures
// rather than queueing them.
(function () {
  "use strict";
  const say = function (english) { return window.grassroots ? window.grassroots.say(english) : english; };
  const element = document.getElementById("images");
  const image = element.querySelector("img");
  const slider = document.getElementById("images-index");
  const preset = document.getElementById("images-window");
  const at = document.getElementById("images-at");
  const status = document.getElementById("images-status");
  const count = Number(element.dataset.images);
  const state = { frames: 0, errors: 0, index: Number(slider.value), shown: null, loading: false };
  window.grassrootsImages = state;

  function query() {
    const scale = window.devicePixelRatio || 1;
    const w = Math.max(64, Math.round(element.clientWidth * scale));
    const h = Math.max(64, Math.round(element.clientHeight * scale));
    return "index=" + state.index + "&viewport=" + w + "," + h + (preset.value ? "&window=" + preset.value : "");
  }
  const socket = window.grassrootsRenderSocket(element.dataset.socket, {
    frame: function (header, blob) {
      const previous = image.src;
      image.src = URL.createObjectURL(blob);
      if (previous && previous.startsWith("blob:")) URL.revokeObjectURL(previous);
      state.shown = header.query;
      state.frames += 1;
      state.loading = !socket.settled("image");
      status.textContent = "";
    },
    refused: function (answer) {
      if (!answer.lost) state.errors += 1;
      state.loading = !socket.settled("image");
      status.textContent = say(answer.error || "");
    },
  });
  function show() {
    at.textContent = (state.index + 1) + " / " + count;
    slider.value = state.index;
    state.loading = true;
    socket.send("image", "image", query());
  }
  function step(by) {
    const next = Math.min(count - 1, Math.max(0, state.index + by));
    if (next !== state.index) { state.index = next; show(); }
  }
  element.addEventListener("wheel", function (event) { event.preventDefault(); step(event.deltaY > 0 ? 1 : -1); }, { passive: false });
  element.addEventListener("keydown", function (event) {
    const by = { ArrowDown: 1, ArrowRight: 1, PageDown: 10, ArrowUp: -1, ArrowLeft: -1, PageUp: -10 }[event.key];
    if (by) { event.preventDefault(); step(by); }
  });
  slider.addEventListener("input", function () { state.index = Number(slider.value); show(); });
  preset.addEventListener("change", show);
  show();
})();
