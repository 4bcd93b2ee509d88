// Grassroots slide viewer: OpenSeadragon over the edge's Deep Zoom tiles, with a navigator and a
// scale bar from the slide's microns per pixel. Keyboard (arrows, +/-, 0) and touch (pinch, drag)
// come with OpenSeadragon. Tiles come from this edge only; nothing loads from the internet.
(function () {
  "use strict";
  const say = function (english) { return window.grassroots ? window.grassroots.say(english) : english; };
  const element = document.getElementById("viewer");
  const micronsPerPixel = parseFloat(element.dataset.mpp) || 0;
  const viewer = OpenSeadragon({
    element: element,
    prefixUrl: element.dataset.osdPrefix + "/images/",
    tileSources: element.dataset.dzi,
    drawer: "canvas",
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    loadTilesWithAjax: true,
    ajaxWithCredentials: true,
    maxZoomPixelRatio: 2,
    visibilityRatio: 0.5,
    gestureSettingsTouch: { pinchRotate: false },
  });
  window.grassrootsViewer = viewer;

  const status = { tilesLoaded: 0, tilesFailed: 0 };
  window.grassrootsViewerStatus = status;
  // The viewer says what it is doing until the first tile shows, and why when the slide cannot
  // be opened: never a bare black box.
  const waiting = element.querySelector(".viewer-wait");
  viewer.addHandler("tile-loaded", function () {
    status.tilesLoaded += 1;
    if (waiting && waiting.parentNode) waiting.remove();
  });
  viewer.addHandler("open-failed", function (event) {
    if (waiting) waiting.textContent = say("The slide could not be opened: ") + (event.message || say("the edge did not answer")) + ".";
  });
  viewer.addHandler("tile-load-failed", function () {
    status.tilesFailed += 1;
    document.getElementById("viewer-message").textContent = say("Some tiles could not be loaded; retrying as you move.");
  });

  // Linking the slide to its case: a refusal (not a case number...) shows beside the field,
  // in the server's words, instead of a page of JSON. Without scripts the form posts as usual.
  const caseForm = document.querySelector("form[action$='/case']");
  if (caseForm) caseForm.addEventListener("submit", function (event) {
    const slide = (caseForm.getAttribute("action").match(/^\/view\/([^/]+)\/case$/) || [])[1];
    if (!slide) return;
    event.preventDefault();
    const input = caseForm.querySelector("input[name=number]");
    window.grassroots.send("/api/v1/slides/" + slide + "/case", { method: "POST", json: { number: input.value } })
      .then(function () { window.location.reload(); },
            function (error) { window.grassroots.showError(input, error); });
  });

  const bar = document.getElementById("scalebar");
  const barLine = bar.querySelector(".line");
  const barLabel = bar.querySelector(".label");
  function niceLength(microns) {
    const magnitude = Math.pow(10, Math.floor(Math.log10(microns)));
    for (const step of [5, 2, 1]) {
      if (step * magnitude <= microns) return step * magnitude;
    }
    return magnitude;
  }
  function updateScaleBar() {
    if (!micronsPerPixel || viewer.world.getItemCount() === 0) {
      bar.hidden = true;
      return;
    }
    const screenPixelsPerImagePixel = viewer.viewport.viewportToImageZoom(viewer.viewport.getZoom(true));
    const micronsPerScreenPixel = micronsPerPixel / screenPixelsPerImagePixel;
    const length = niceLength(120 * micronsPerScreenPixel);
    barLine.style.width = Math.round(length / micronsPerScreenPixel) + "px";
    barLabel.textContent = length >= 1000 ? (length / 1000) + " mm" : length + " µm";
    bar.hidden = false;
  }
  // Screening: the lesion heatmap as a second image stretched over the slide's grid, and the
  // top regions as outlined overlays, each with a switch.
  if (element.dataset.heatmap) {
    viewer.addHandler("open", function () {
      if (viewer.world.getItemCount() !== 1) return;
      viewer.addTiledImage({
        tileSource: { type: "image", url: element.dataset.heatmap, buildPyramid: false },
        x: parseFloat(element.dataset.heatX),
        y: parseFloat(element.dataset.heatY),
        width: parseFloat(element.dataset.heatW),
        opacity: 0.45,
        success: function (event) {
          event.item.setCompositeOperation("source-over");
          window.grassrootsHeatmap = event.item;
          const toggle = document.getElementById("heatmap-toggle");
          if (toggle) toggle.addEventListener("change", function () { event.item.setOpacity(toggle.checked ? 0.45 : 0); });
        },
      });
      fetch(element.dataset.regions, { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.json() : { features: [] }; })
        .then(function (collection) {
          const width = parseFloat(element.dataset.slideWidth) || 1;
          const boxes = [];
          collection.features.forEach(function (feature, index) {
            const ring = feature.geometry.coordinates[0];
            const xs = ring.map(function (p) { return p[0]; });
            const ys = ring.map(function (p) { return p[1]; });
            const x0 = Math.min.apply(null, xs), y0 = Math.min.apply(null, ys);
            const box = document.createElement("div");
            box.className = "ai-region";
            box.title = "AI region " + (index + 1) + ": score " + feature.properties.score.toFixed(2);
            box.style.border = "2px solid #e0218a";
            box.style.boxSizing = "border-box";
            viewer.addOverlay({
              element: box,
              location: new OpenSeadragon.Rect(x0 / width, y0 / width,
                (Math.max.apply(null, xs) - x0) / width, (Math.max.apply(null, ys) - y0) / width),
            });
            boxes.push(box);
          });
          window.grassrootsRegions = boxes.length;
          const toggle = document.getElementById("regions-toggle");
          if (toggle) toggle.addEventListener("change", function () {
            boxes.forEach(function (box) { box.style.display = toggle.checked ? "" : "none"; });
          });
        });
    });
  }

  // The expert's annotations from a consult answer (GeoJSON in slide pixels), drawn as SVG
  // over the slide and kept in place as the view moves.
  const expertShapes = JSON.parse(element.dataset.annotations || "[]");
  window.grassrootsExpertShapes = expertShapes.length;
  if (expertShapes.length > 0) {
    const SVG = "http://www.w3.org/2000/svg";
    const layer = document.createElementNS(SVG, "svg");
    layer.setAttribute("class", "expert-annotations");
    layer.style.cssText = "position:absolute;inset:0;width:100%;height:100%;pointer-events:none;z-index:5";
    element.appendChild(layer);
    const screen = function (p) {
      const s = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(p[0], p[1]));
      return [s.x.toFixed(1), s.y.toFixed(1)];
    };
    const draw = function () {
      while (layer.firstChild) layer.removeChild(layer.firstChild);
      if (viewer.world.getItemCount() === 0) return;
      expertShapes.forEach(function (feature) {
        const g = feature.geometry || {};
        const name = ((feature.properties || {}).classification || {}).name || "annotation";
        let shape;
        if (g.type === "Point") {
          const [x, y] = screen(g.coordinates);
          shape = document.createElementNS(SVG, "circle");
          shape.setAttribute("cx", x); shape.setAttribute("cy", y); shape.setAttribute("r", 6);
          shape.setAttribute("fill", "#00c2ff");
        } else if (g.type === "Polygon") {
          shape = document.createElementNS(SVG, "polygon");
          shape.setAttribute("points", g.coordinates[0].map(function (p) { return screen(p).join(","); }).join(" "));
          shape.setAttribute("fill", "rgba(0,194,255,0.12)");
          shape.setAttribute("stroke", "#00c2ff");
          shape.setAttribute("stroke-width", 2);
        } else {
          return;
        }
        const title = document.createElementNS(SVG, "title");
        title.textContent = say("Expert: ") + name;
        shape.appendChild(title);
        layer.appendChild(shape);
      });
    };
    ["open", "animation", "update-viewport", "resize"].forEach(function (e) { viewer.addHandler(e, draw); });
  }

  // Live session: follow the expert's viewport and pointer, relayed by the hub.
  if (element.dataset.follow) {
    const slideId = element.dataset.dzi.replace(/^\/slides\//, "").replace(/\.dzi$/, "");
    const follow = { updates: 0, connected: false, last: null };
    window.grassrootsFollow = follow;
    const pointer = document.createElement("div");
    pointer.className = "expert-pointer";
    pointer.style.cssText = "position:absolute;width:14px;height:14px;margin:-7px 0 0 -7px;border-radius:50%;background:#ffd400;box-shadow:0 0 0 2px #000;z-index:6;display:none;pointer-events:none";
    element.appendChild(pointer);
    const note = document.getElementById("viewer-message");
    const connect = function () {
      const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      const socket = new WebSocket(scheme + window.location.host + "/referrals/" + element.dataset.follow + "/live");
      socket.onopen = function () { follow.connected = true; note.textContent = say("Following the expert live."); };
      socket.onmessage = function (event) {
        const update = JSON.parse(event.data);
        if (update.slide_id !== slideId || viewer.world.getItemCount() === 0) return;
        const [x, y, w, h] = update.viewport;
        viewer.viewport.fitBounds(viewer.viewport.imageToViewportRectangle(x, y, w, h));
        if (update.pointer) {
          const p = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(update.pointer[0], update.pointer[1]));
          pointer.style.left = p.x + "px";
          pointer.style.top = p.y + "px";
          pointer.style.display = "block";
        }
        follow.updates += 1;
        follow.last = update;
      };
      socket.onclose = function () {
        follow.connected = false;
        note.textContent = say("Live session interrupted; reconnecting…");
        setTimeout(connect, 1000);
      };
    };
    connect();
  }

  viewer.addHandler("open", updateScaleBar);
  viewer.addHandler("animation", updateScaleBar);
  viewer.addHandler("resize", updateScaleBar);
})();
