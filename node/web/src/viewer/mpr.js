// Reformatted views of a CT or MR volume: axial, coronal and sagittal planes cut by the edge
// (the queries of `/studies/{study}/series/{series}/mpr.jpg`, sent on the viewer's render
// socket: render-socket.js), with linked cursors: a click or a drag in one
// view moves the point the three views go through. The wheel moves a view's own plane. While
// dragging, each view asks for small pictures; when the pointer rests, the full ones. Only the
// latest wish of a view is fetched: one that falls behind drops the pictures in between.
(function () {
  "use strict";
  const say = function (english) { return window.grassroots ? window.grassroots.say(english) : english; };
  const root = document.getElementById("mpr");
  const extents = JSON.parse(root.dataset.extents);
  const windowSelect = document.getElementById("mpr-window");
  const projection = document.getElementById("mpr-projection");
  const slab = document.getElementById("mpr-slab");
  const rotation = document.getElementById("mpr-rotation");
  const status = document.getElementById("mpr-status");
  // The point the views go through, mm from the volume's centre (LPS).
  const point = { x: 0, y: 0, z: 0 };
  const state = { frames: 0, errors: 0, point: point, views: {} };
  window.grassrootsMpr = state;

  // The coronal view may be turned by an angle about its vertical axis: its right is then
  // (cos, sin, 0) and its normal (-sin, cos, 0) in patient space (as the edge cuts it).
  function turn() {
    const angle = parseFloat(rotation.value) * Math.PI / 180;
    return { cos: Math.cos(angle), sin: Math.sin(angle) };
  }
  function offsetOf(orientation) {
    if (orientation === "axial") return point.z;
    if (orientation === "coronal") { const t = turn(); return -point.x * t.sin + point.y * t.cos; }
    return -point.x;
  }
  // The cursor's place in a view, mm right and down from its centre.
  function cursorIn(orientation) {
    if (orientation === "axial") return [point.x, point.y];
    if (orientation === "coronal") { const t = turn(); return [point.x * t.cos + point.y * t.sin, -point.z]; }
    return [point.y, -point.z];
  }
  function moveTo(orientation, right, down) {
    if (orientation === "axial") { point.x = right; point.y = down; }
    else if (orientation === "coronal") {
      // The point stays in the turned plane: right along it, its distance from the centre kept.
      const t = turn(), off = offsetOf("coronal");
      point.x = right * t.cos - off * t.sin;
      point.y = right * t.sin + off * t.cos;
      point.z = -down;
    } else { point.y = right; point.z = -down; }
  }

  const views = Array.from(root.querySelectorAll(".mpr-view")).map(function (element) {
    const view = { element: element, orientation: element.dataset.orientation, image: element.querySelector("img"),
                   overlay: element.querySelector("svg"), loading: false, wanted: null, shown: null };
    state.views[view.orientation] = view;
    return view;
  });

  function query(view, quick) {
    const scale = quick ? 0.25 : (window.devicePixelRatio || 1);
    const size = Math.max(64, Math.round(view.element.clientWidth * scale));
    let text = "orientation=" + view.orientation + "&offset=" + offsetOf(view.orientation).toFixed(1) +
      "&window=" + windowSelect.value + "&viewport=" + size + "," + size + "&projection=" + projection.value +
      "&slab=" + slab.value;
    if (view.orientation === "coronal") text += "&rotation=" + rotation.value;
    return text;
  }
  // One socket for the three views: each frame answers one view's wish.
  const socket = window.grassrootsRenderSocket(root.dataset.socket, {
    frame: function (header, blob) {
      const view = state.views[header.view];
      if (!view) return;
      const previous = view.image.src;
      view.image.src = URL.createObjectURL(blob);
      if (previous && previous.startsWith("blob:")) URL.revokeObjectURL(previous);
      view.shown = header.query;
      state.frames += 1;
      settle(view);
      window.grassroots.showError(status, "");
    },
    refused: function (answer) {
      if (!answer.lost) state.errors += 1;
      const view = state.views[answer.view];
      if (view) settle(view);
      window.grassroots.showError(status, say("The view could not be shown: ") + say(answer.error || ""));
    },
  });
  function settle(view) {
    view.loading = !socket.settled(view.orientation);
    view.wanted = view.loading ? view.wanted : null;
  }
  function request(view, quick) {
    const text = query(view, quick);
    view.wanted = text;
    view.loading = true;
    socket.send(view.orientation, "plane", text);
  }
  function drawCursor(view) {
    const extent = extents[view.orientation];
    const cursor = cursorIn(view.orientation);
    view.overlay.setAttribute("viewBox", (-extent[0] / 2) + " " + (-extent[1] / 2) + " " + extent[0] + " " + extent[1]);
    view.overlay.setAttribute("preserveAspectRatio", "xMidYMid meet");
    view.overlay.innerHTML = '<line x1="' + cursor[0] + '" x2="' + cursor[0] + '" y1="' + (-extent[1] / 2) + '" y2="' + (extent[1] / 2) +
      '" stroke="#ffd400" stroke-width="' + extent[0] / 300 + '"/><line y1="' + cursor[1] + '" y2="' + cursor[1] + '" x1="' + (-extent[0] / 2) +
      '" x2="' + (extent[0] / 2) + '" stroke="#00d4ff" stroke-width="' + extent[0] / 300 + '"/>';
    document.getElementById("mpr-" + view.orientation + "-at").textContent = offsetOf(view.orientation).toFixed(1) + " mm";
  }
  function refresh(quick, except) {
    views.forEach(function (view) { drawCursor(view); if (view !== except) request(view, quick); });
  }

  // Where in a view (mm from its centre) a pointer is: the picture fills the square view with
  // its own proportions (object-fit: contain).
  function mmAt(view, event) {
    const rect = view.element.getBoundingClientRect();
    const extent = extents[view.orientation];
    const scale = Math.min(rect.width / extent[0], rect.height / extent[1]);
    return [(event.clientX - rect.left - rect.width / 2) / scale, (event.clientY - rect.top - rect.height / 2) / scale];
  }
  views.forEach(function (view) {
    let dragging = false;
    view.element.addEventListener("pointerdown", function (event) {
      if (event.pointerType === "mouse" && event.button !== 0) return;
      dragging = true;
      view.element.setPointerCapture(event.pointerId);
      const at = mmAt(view, event);
      moveTo(view.orientation, at[0], at[1]);
      refresh(true, view);
      event.preventDefault();
    });
    view.element.addEventListener("pointermove", function (event) {
      if (!dragging) return;
      const at = mmAt(view, event);
      moveTo(view.orientation, at[0], at[1]);
      refresh(true, view);
    });
    view.element.addEventListener("pointerup", function () { dragging = false; refresh(false, view); });
    ["pointercancel", "lostpointercapture"].forEach(function (name) {
      view.element.addEventListener(name, function () { if (dragging) { dragging = false; refresh(false, view); } });
    });
    view.element.addEventListener("wheel", function (event) {
      event.preventDefault();
      const step = event.deltaY > 0 ? 2 : -2;
      if (view.orientation === "axial") point.z += step;
      else if (view.orientation === "coronal") point.y += step;
      else point.x -= step;
      drawCursor(view);
      request(view, false);
      views.forEach(drawCursor);
    }, { passive: false });
    view.element.addEventListener("keydown", function (event) {
      const step = { ArrowUp: -2, ArrowDown: 2, PageUp: -10, PageDown: 10 }[event.key];
      if (step === undefined) return;
      event.preventDefault();
      if (view.orientation === "axial") point.z += step;
      else if (view.orientation === "coronal") point.y += step;
      else point.x -= step;
      request(view, false);
      views.forEach(drawCursor);
    });
  });
  [windowSelect, projection].forEach(function (control) { control.addEventListener("change", function () { refresh(false); }); });
  slab.addEventListener("input", function () {
    document.getElementById("mpr-slab-mm").textContent = slab.value + " mm";
    if (projection.value !== "plane") refresh(true);
  });
  slab.addEventListener("change", function () { if (projection.value !== "plane") refresh(false); });
  rotation.addEventListener("input", function () {
    document.getElementById("mpr-rotation-deg").textContent = rotation.value + "°";
    views.forEach(drawCursor);
    request(state.views.coronal, true);
  });
  rotation.addEventListener("change", function () { request(state.views.coronal, false); });
  refresh(false);
})();
