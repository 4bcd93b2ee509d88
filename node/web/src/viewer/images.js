// A series' pictures one at a time, each rendered where the page's socket leads (at the hub:
// by the referring edge, relayed): scroll with the wheel, the arrow keys or the slider; window
// presets. Only the latest wish is kept by the renderer, so fast scrolling skips pictures
// rather than queueing them. Dragging measures, when asked to: a length in mm (here, from the
// picture's Pixel Spacing, which the page asks for once) or a region's modality values (HU of
// a CT, measured where the pixels are: only the numbers come back).
(function () {
  "use strict";
  const say = function (english) { return window.grassroots ? window.grassroots.say(english) : english; };
  const element = document.getElementById("images");
  const image = element.querySelector("img");
  const overlay = document.getElementById("images-overlay");
  const slider = document.getElementById("images-index");
  const preset = document.getElementById("images-window");
  const at = document.getElementById("images-at");
  const status = document.getElementById("images-status");
  const measure = document.getElementById("images-measure");
  const count = Number(element.dataset.images);
  // `index` is the picture asked for, `shownIndex` the one on screen (measurements are of it).
  const state = { frames: 0, errors: 0, index: Number(slider.value), shown: null, shownIndex: null, loading: false,
                  length: null, region: null, regionRect: null, measurements: 0 };
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
      const shownIndex = /(?:^|&)index=(\d+)/.exec(header.query || "");
      if (shownIndex && Number(shownIndex[1]) !== state.shownIndex) {
        state.shownIndex = Number(shownIndex[1]);
        clearMarks();
      }
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
  // A new picture on screen, or a new measurement: what was measured before is gone, and an
  // answer still on its way for it is ignored.
  function clearMarks() {
    overlay.innerHTML = "";
    measure.textContent = "";
    window.grassroots.showError(measure, "");
    state.length = null; state.region = null; state.regionRect = null;
    state.measurements += 1;
  }
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

  // Each picture's size and spacing, asked once, when a measurement first needs them.
  let geometry = null;
  function pictures() {
    if (!geometry) {
      geometry = window.grassroots.send(element.dataset.stack).catch(function (error) { geometry = null; throw error; });
    }
    return geometry;
  }
  function mode() { return document.querySelector("input[name=images-mode]:checked").value; }
  // Touch drags measure only in a measuring mode: otherwise a finger scrolls the page.
  function modeChanged() { element.classList.toggle("measuring", mode() !== "scroll"); }
  document.querySelectorAll("input[name=images-mode]").forEach(function (radio) { radio.addEventListener("change", modeChanged); });
  modeChanged();

  // Where a pointer is, in the element's pixels, and in the picture's own pixels: the JPEG is
  // the whole picture scaled, drawn to fit (object-fit: contain).
  function onElement(event) {
    const box = element.getBoundingClientRect();
    return { x: event.clientX - box.left, y: event.clientY - box.top };
  }
  function toPicture(point, item) {
    const width = image.naturalWidth, height = image.naturalHeight;
    if (!width || !height) return null;
    const scale = Math.min(element.clientWidth / width, element.clientHeight / height);
    const left = (element.clientWidth - width * scale) / 2, top = (element.clientHeight - height * scale) / 2;
    const x = (point.x - left) / (width * scale) * item.columns, y = (point.y - top) / (height * scale) * item.rows;
    return { x: Math.min(item.columns, Math.max(0, x)), y: Math.min(item.rows, Math.max(0, y)) };
  }
  function mark(kind, a, b) {
    overlay.setAttribute("viewBox", "0 0 " + element.clientWidth + " " + element.clientHeight);
    window.grassrootsMark(overlay, kind, a, b, 2);
  }
  function measured(kind, a, b) {
    clearMarks();
    mark(kind, a, b);
    const index = state.shownIndex, asked = state.measurements;
    const current = function () { return asked === state.measurements; };
    if (index === null) return;
    pictures().then(function (all) {
      const item = all[index];
      if (!current()) return;
      if (!item || !item.columns || !item.rows) { measure.textContent = say("This image does not say its size: it cannot be measured."); return; }
      const p = toPicture(a, item), q = toPicture(b, item);
      if (!p || !q) { measure.textContent = say("This image does not say its size: it cannot be measured."); return; }
      if (kind === "length") {
        if (!item.spacing) { measure.textContent = say("This image does not say its pixel spacing: no length in mm."); return; }
        state.length = Math.hypot((q.x - p.x) * item.spacing[1], (q.y - p.y) * item.spacing[0]);
        measure.textContent = say("Length") + ": " + state.length.toFixed(1) + " mm";
        return;
      }
      // Every pixel the rectangle touches.
      const x = Math.floor(Math.min(p.x, q.x)), y = Math.floor(Math.min(p.y, q.y));
      const w = Math.max(1, Math.ceil(Math.max(p.x, q.x)) - x), h = Math.max(1, Math.ceil(Math.max(p.y, q.y)) - y);
      const address = element.dataset.region + "?index=" + index + "&x=" + x + "&y=" + y + "&width=" + w + "&height=" + h;
      measure.textContent = say("Measuring…");
      return window.grassroots.send(address).then(function (stats) {
        if (!current()) return;
        state.region = stats;
        state.regionRect = [x, y, w, h];
        measure.textContent = say("Region") + ": " + stats.mean.toFixed(1) + " ± " + stats.standard_deviation.toFixed(1) +
          " (" + say("min") + " " + stats.min.toFixed(0) + ", " + say("max") + " " + stats.max.toFixed(0) + ", " + stats.pixels + " px)";
      });
    }).catch(function (error) {
      if (!current()) return;
      measure.textContent = "";
      window.grassroots.showError(measure, error);
    });
  }

  let drag = null;
  element.addEventListener("pointerdown", function (event) {
    if (mode() === "scroll" || (event.button !== 0 && event.pointerType === "mouse")) return;
    element.setPointerCapture(event.pointerId);
    drag = onElement(event);
    event.preventDefault();
  });
  element.addEventListener("pointermove", function (event) { if (drag) mark(mode(), drag, onElement(event)); });
  // A drag the browser takes away (a system gesture) ends without measuring.
  ["pointercancel", "lostpointercapture"].forEach(function (name) {
    element.addEventListener(name, function () { drag = null; });
  });
  element.addEventListener("pointerup", function (event) {
    if (!drag) return;
    const start = drag, end = onElement(event);
    drag = null;
    // A click is no measurement.
    if (Math.hypot(end.x - start.x, end.y - start.y) < 3) { overlay.innerHTML = ""; return; }
    measured(mode(), start, end);
  });
  element.addEventListener("wheel", function (event) { event.preventDefault(); step(event.deltaY > 0 ? 1 : -1); }, { passive: false });
  element.addEventListener("keydown", function (event) {
    const by = { ArrowDown: 1, ArrowRight: 1, PageDown: 10, ArrowUp: -1, ArrowLeft: -1, PageUp: -10 }[event.key];
    if (by) { event.preventDefault(); step(by); }
  });
  slider.addEventListener("input", function () { state.index = Number(slider.value); show(); });
  preset.addEventListener("change", show);
  show();
})();
