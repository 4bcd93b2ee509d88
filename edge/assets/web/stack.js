// The radiology stack viewer: every picture is rendered by the edge (DICOMweb rendered
// resources); this script only asks for them and draws measurements over them. Scroll with the
// wheel, the arrow keys or the slider; drag to change the window, move the image, measure a
// length (mm, from Pixel Spacing) or a region's HU (computed by the edge from the modality
// values). While dragging the window it asks for small, quick pictures and, once the pointer
// rests, the full one; a request never waits behind older ones: only the latest is sent.
(function () {
  "use strict";
  const say = function (english) { return window.grassroots ? window.grassroots.say(english) : english; };
  const box = document.getElementById("stack-viewer");
  const frame = box.querySelector(".stack-frame");
  const image = document.getElementById("stack-image");
  const overlay = document.getElementById("stack-overlay");
  const status = document.getElementById("stack-status");
  const measure = document.getElementById("stack-measure");
  const slider = document.getElementById("stack-index");
  const preset = document.getElementById("stack-window");
  const waiting = box.querySelector(".viewer-wait");
  const stack = JSON.parse(box.dataset.stack);
  const base = "/dicom-web/studies/" + box.dataset.study + "/series/" + box.dataset.series + "/instances/";
  const state = { index: 0, window: null, zoom: 1, panX: 0, panY: 0, loading: false, wanted: null, shown: null };
  window.grassrootsStack = state;
  state.frames = 0;
  state.errors = 0;

  function mode() {
    const checked = document.querySelector("input[name=stack-mode]:checked");
    return checked ? checked.value : "scroll";
  }

  function url(quick) {
    const item = stack[state.index];
    const scale = quick ? 0.25 : (window.devicePixelRatio || 1);
    // Never more than the image itself: the edge does not enlarge.
    const w = Math.min(item.columns || 4096, Math.max(64, Math.round(box.clientWidth * scale * state.zoom)));
    const h = Math.min(item.rows || 4096, Math.max(64, Math.round(box.clientHeight * scale * state.zoom)));
    let address = base + item.instance + "/frames/" + item.frame + "/rendered?viewport=" + w + "," + h;
    if (state.window) address += "&window=" + Math.round(state.window[0]) + "," + Math.max(1, Math.round(state.window[1]));
    return address;
  }

  // Only the latest wish is fetched: a viewer that falls behind drops the pictures in between.
  function show(quick) {
    state.wanted = url(quick);
    fetchWanted();
  }

  function fetchWanted() {
    if (state.loading || !state.wanted) return;
    const address = state.wanted;
    state.wanted = null;
    state.loading = true;
    fetch(address, { credentials: "same-origin" }).then(function (response) {
      if (!response.ok) {
        return response.text().then(function (text) {
          let reason = text;
          try { reason = JSON.parse(text).error || text; } catch (notJson) { /* as it is */ }
          throw new Error(reason);
        });
      }
      const window_ = response.headers.get("x-window");
      if (window_ && !state.window) state.own = window_.split(",").map(Number);
      return response.blob();
    }).then(function (blob) {
      const previous = image.src;
      image.src = URL.createObjectURL(blob);
      if (previous && previous.startsWith("blob:")) URL.revokeObjectURL(previous);
      state.frames += 1;
      state.shown = address;
      if (waiting && waiting.parentNode) waiting.remove();
      describe();
    }, function (error) {
      state.errors += 1;
      if (waiting) { waiting.textContent = say("The image could not be shown: ") + error.message; box.appendChild(waiting); }
    }).then(function () {
      state.loading = false;
      fetchWanted();
    });
  }

  function describe() {
    const item = stack[state.index];
    const w = state.window || state.own;
    status.textContent = say("Image") + " " + (state.index + 1) + " / " + stack.length +
      (w ? " · " + say("window") + " " + Math.round(w[0]) + " / " + Math.round(w[1]) : "") +
      " · " + item.columns + " × " + item.rows;
    slider.value = String(state.index + 1);
  }

  function go(index) {
    const next = Math.max(0, Math.min(stack.length - 1, index));
    if (next === state.index && state.shown) return;
    state.index = next;
    clearMarks();
    show(false);
  }

  function place() {
    image.style.transform = "translate(" + state.panX + "px," + state.panY + "px) scale(" + state.zoom + ")";
    overlay.style.transform = image.style.transform;
  }

  // Image pixel coordinates of a pointer event (the rendered picture is scaled to fit).
  function toImage(event) {
    const rect = image.getBoundingClientRect();
    const item = stack[state.index];
    return {
      x: (event.clientX - rect.left) / rect.width * item.columns,
      y: (event.clientY - rect.top) / rect.height * item.rows,
    };
  }

  function clearMarks() { overlay.innerHTML = ""; measure.textContent = ""; }

  function mark(kind, a, b) {
    const item = stack[state.index];
    overlay.setAttribute("viewBox", "0 0 " + item.columns + " " + item.rows);
    window.grassrootsMark(overlay, kind, a, b, Math.max(1, item.columns / 256));
  }

  function lengthOf(a, b) {
    const item = stack[state.index];
    if (!item.spacing) { measure.textContent = say("This image does not say its pixel spacing: no length in mm."); return; }
    const mm = Math.hypot((b.x - a.x) * item.spacing[1], (b.y - a.y) * item.spacing[0]);
    measure.textContent = say("Length") + ": " + mm.toFixed(1) + " mm";
    state.length = mm;
  }

  function regionOf(a, b) {
    const item = stack[state.index];
    const x = Math.max(0, Math.floor(Math.min(a.x, b.x))), y = Math.max(0, Math.floor(Math.min(a.y, b.y)));
    const w = Math.max(1, Math.round(Math.abs(b.x - a.x))), h = Math.max(1, Math.round(Math.abs(b.y - a.y)));
    const address = "/api/v1/studies/" + box.dataset.study + "/series/" + box.dataset.series + "/instances/" +
      item.instance + "/region?frame=" + item.frame + "&x=" + x + "&y=" + y + "&width=" + w + "&height=" + h;
    window.grassroots.send(address).then(function (stats) {
      state.region = stats;
      state.regionRect = [x, y, w, h];
      measure.textContent = say("Region") + ": " + stats.mean.toFixed(1) + " ± " + stats.standard_deviation.toFixed(1) +
        " (" + say("min") + " " + stats.min.toFixed(0) + ", " + say("max") + " " + stats.max.toFixed(0) + ", " + stats.pixels + " px)";
    }, function (error) { window.grassroots.showError(measure, error); });
  }

  let drag = null;
  box.addEventListener("pointerdown", function (event) {
    if (event.button !== 0 && event.pointerType === "mouse") return;
    box.setPointerCapture(event.pointerId);
    drag = { x: event.clientX, y: event.clientY, start: toImage(event), index: state.index,
             window: (state.window || state.own || [40, 400]).slice(), panX: state.panX, panY: state.panY };
    event.preventDefault();
  });
  box.addEventListener("pointermove", function (event) {
    if (!drag) return;
    const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
    switch (mode()) {
      case "scroll": go(drag.index + Math.round(dy / 8)); break;
      case "window":
        state.window = [drag.window[0] + dy * 2, Math.max(1, drag.window[1] + dx * 4)];
        preset.value = "";
        show(true);
        describe();
        break;
      case "pan": state.panX = drag.panX + dx; state.panY = drag.panY + dy; place(); break;
      default: mark(mode(), drag.start, toImage(event));
    }
  });
  // A drag the browser takes away (a system gesture) ends without measuring.
  ["pointercancel", "lostpointercapture"].forEach(function (name) {
    box.addEventListener(name, function () { if (drag && mode() === "window") show(false); drag = null; });
  });
  box.addEventListener("pointerup", function (event) {
    if (!drag) return;
    const end = toImage(event);
    if (mode() === "window") show(false);
    if (mode() === "length") lengthOf(drag.start, end);
    if (mode() === "region") regionOf(drag.start, end);
    drag = null;
  });
  box.addEventListener("wheel", function (event) {
    event.preventDefault();
    go(state.index + (event.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  box.addEventListener("keydown", function (event) {
    const moves = { ArrowDown: 1, ArrowRight: 1, PageDown: 10, ArrowUp: -1, ArrowLeft: -1, PageUp: -10 };
    if (event.key in moves) { go(state.index + moves[event.key]); event.preventDefault(); }
    if (event.key === "Home") { go(0); event.preventDefault(); }
    if (event.key === "End") { go(stack.length - 1); event.preventDefault(); }
  });
  slider.addEventListener("input", function () { go(parseInt(slider.value, 10) - 1); });
  preset.addEventListener("change", function () {
    state.window = preset.value ? preset.value.split(",").map(Number) : null;
    show(false);
  });
  function zoomBy(factor) { state.zoom = Math.max(1, Math.min(8, state.zoom * factor)); place(); show(false); }
  document.getElementById("stack-zoom-in").addEventListener("click", function () { zoomBy(1.5); });
  document.getElementById("stack-zoom-out").addEventListener("click", function () { zoomBy(1 / 1.5); });
  document.getElementById("stack-reset").addEventListener("click", function () {
    state.zoom = 1; state.panX = 0; state.panY = 0; state.window = null; preset.value = ""; clearMarks(); place(); show(false);
  });
  // The middle of the series first: in a CT that is where the organs are.
  go(Math.floor(stack.length / 2));
})();
