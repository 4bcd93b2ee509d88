// Volume rendering of a CT or MR volume, made by the edge (ray casting) and received as JPEG
// frames on the viewer's render socket (render-socket.js). Dragging turns the volume, the
// wheel (or + and -) zooms, the arrow keys turn it by steps; the cropping sliders cut away
// what hides the inside. While dragging the edge sends small frames; when the pointer rests,
// the full one. The edge keeps only the latest wish: a viewer that falls behind skips frames.
(function () {
  "use strict";
  const say = function (english) { return window.grassroots ? window.grassroots.say(english) : english; };
  const element = document.getElementById("volume");
  const image = element.querySelector("img");
  const preset = document.getElementById("volume-preset");
  const status = document.getElementById("volume-status");
  const state = { frames: 0, errors: 0, azimuth: 0, elevation: 0, zoom: 1, shown: null, loading: false, lastMs: null };
  window.grassrootsVolume = state;
  const crops = ["x0", "x1", "y0", "y1", "z0", "z1"].map(function (id) { return document.getElementById("crop-" + id); });

  function query(quick) {
    const scale = quick ? 0.25 : (window.devicePixelRatio || 1);
    const size = Math.max(64, Math.min(1024, Math.round(element.clientWidth * scale)));
    return "preset=" + preset.value + "&azimuth=" + state.azimuth.toFixed(1) + "&elevation=" + state.elevation.toFixed(1) +
      "&zoom=" + state.zoom.toFixed(2) + "&crop=" + crops.map(function (c) { return (c.value / 100).toFixed(2); }).join(",") +
      "&viewport=" + size + "," + size + (quick ? "&quality=draft" : "");
  }
  const socket = window.grassrootsRenderSocket(element.dataset.socket, {
    frame: function (header, blob) {
      const previous = image.src;
      image.src = URL.createObjectURL(blob);
      if (previous && previous.startsWith("blob:")) URL.revokeObjectURL(previous);
      state.shown = header.query;
      state.lastMs = header.ms;
      state.frames += 1;
      state.loading = !socket.settled("volume");
      window.grassroots.showError(status, "");
    },
    refused: function (answer) {
      if (!answer.lost) state.errors += 1;
      state.loading = !socket.settled("volume");
      window.grassroots.showError(status, say("The view could not be shown: ") + say(answer.error || ""));
    },
  });
  function request(quick) {
    state.loading = true;
    socket.send("volume", "volume", query(quick));
  }
  function turn(azimuth, elevation, quick) {
    state.azimuth = ((azimuth % 360) + 360) % 360;
    state.elevation = Math.max(-89, Math.min(89, elevation));
    request(quick);
  }

  let drag = null;
  element.addEventListener("pointerdown", function (event) {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    drag = { x: event.clientX, y: event.clientY, azimuth: state.azimuth, elevation: state.elevation };
    element.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  element.addEventListener("pointermove", function (event) {
    if (!drag) return;
    turn(drag.azimuth - (event.clientX - drag.x) * 0.5, drag.elevation + (event.clientY - drag.y) * 0.5, true);
  });
  function endDrag() { if (drag) { drag = null; request(false); } }
  ["pointerup", "pointercancel", "lostpointercapture"].forEach(function (name) { element.addEventListener(name, endDrag); });
  element.addEventListener("wheel", function (event) {
    event.preventDefault();
    state.zoom = Math.max(0.25, Math.min(8, state.zoom * (event.deltaY > 0 ? 0.9 : 1.1)));
    request(false);
  }, { passive: false });
  element.addEventListener("keydown", function (event) {
    const turns = { ArrowLeft: [-10, 0], ArrowRight: [10, 0], ArrowUp: [0, 10], ArrowDown: [0, -10] }[event.key];
    if (turns) { event.preventDefault(); turn(state.azimuth + turns[0], state.elevation + turns[1], false); return; }
    if (event.key === "+" || event.key === "=") { state.zoom = Math.min(8, state.zoom * 1.2); request(false); }
    if (event.key === "-") { state.zoom = Math.max(0.25, state.zoom / 1.2); request(false); }
  });
  document.querySelectorAll("[data-turn]").forEach(function (button) {
    button.addEventListener("click", function () {
      const angles = button.dataset.turn.split(",").map(Number);
      turn(angles[0], angles[1], false);
    });
  });
  preset.addEventListener("change", function () { request(false); });
  crops.forEach(function (slider) {
    slider.addEventListener("input", function () { request(true); });
    slider.addEventListener("change", function () { request(false); });
  });
  request(false);
})();
