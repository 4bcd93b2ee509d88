// Grassroots consult viewer (hub): OpenSeadragon over the consult tile URLs — every tile comes
// from the referring edge through this hub — with the AI's and the referring doctor's regions,
// drawing tools (rectangle, polygon, point) whose shapes become QuPath-compatible GeoJSON in
// slide pixels, the report form, and the state of the link to the edge: when it drops the page
// says so, and when it is back the tiles that failed are fetched again, without a reload.
(function () {
  "use strict";
  const root = document.getElementById("consult");
  const referral = root.dataset.referral;
  const mine = root.dataset.mine === "true";
  const answered = root.dataset.answered === "true";
  const say = window.grassroots.say;

  // --- Taking the case: the page reloads with the viewer, or says why not (409: another
  // expert took it first). ---
  const claim = document.getElementById("claim");
  if (claim) claim.addEventListener("click", function () {
    claim.disabled = true;
    window.grassroots.send("/api/v1/referrals/" + referral + "/claim", { method: "POST" })
      .then(function () { window.location.reload(); })
      .catch(function (error) {
        claim.disabled = false;
        window.grassroots.showError(claim, error);
      });
  });

  // --- The answer (with the annotations drawn on the slides; a referral of studies alone
  // has no slide viewer and sends none) ---
  let drawnAnnotations = function () { return null; };
  const form = document.getElementById("report-form");
  if (form) form.addEventListener("submit", function (event) {
    event.preventDefault();
    const result = document.getElementById("report-result");
    const body = {
      category: form.category.value,
      diagnosis: form.diagnosis.value,
      recommendations: form.recommendations.value,
      annotations: drawnAnnotations(),
    };
    window.grassroots.send("/api/v1/referrals/" + referral + "/report", { method: "POST", json: body })
      .then(function (report) {
        result.textContent = say("Sent: signed with digest ") + report.digest.slice(0, 16) + "…";
        result.dataset.state = "sent";
      }, function (error) {
        result.textContent = say("Not sent: ") + error.message;
        result.dataset.state = "refused";
      });
  });

  const element = document.getElementById("viewer");
  // Only the expert who holds the case has a viewer; the page says why to anyone else.
  if (!element) return;
  const svg = element.querySelector("svg.annotations");
  drawnAnnotations = function () { finishPolygon(); return geojson(); };
  const linkStatus = document.getElementById("link-status");
  const tabs = Array.from(document.querySelectorAll(".slide-tab"));
  const SVG = "http://www.w3.org/2000/svg";

  const status = { tilesLoaded: 0, tilesFailed: 0, linkState: "unknown", recoveries: 0, slide: null,
                   tilesGivenUp: 0, reloadedAfterFailure: 0 };
  window.grassrootsViewerStatus = status;

  const viewer = OpenSeadragon({
    element: element,
    prefixUrl: root.dataset.osdPrefix + "/images/",
    drawer: "canvas",
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    loadTilesWithAjax: true,
    ajaxWithCredentials: true,
    maxZoomPixelRatio: 2,
    visibilityRatio: 0.5,
    tileRetryMax: 2,
    tileRetryDelay: 1500,
    // Drawing tools take clicks and drags; the canvas handlers below stop OpenSeadragon's own
    // panning while a tool other than "pan" is chosen (the wheel still zooms).
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: false, flickEnabled: false },
    gestureSettingsTouch: { pinchRotate: false },
  });
  window.grassrootsViewer = viewer;
  // Tiles that failed (the edge was unreachable): OpenSeadragon marks them as not existing and
  // never asks again, so they are kept here and revived when the link is back.
  const failedTiles = new Set();
  const failedUrls = new Set();
  viewer.addHandler("tile-loaded", function (event) {
    status.tilesLoaded += 1;
    const waiting = element.querySelector(".viewer-wait");
    if (waiting) waiting.remove();
    const url = event.tile.getUrl();
    if (failedUrls.delete(url)) status.reloadedAfterFailure += 1;
  });
  viewer.addHandler("tile-load-failed", function (event) {
    status.tilesFailed += 1;
    // OpenSeadragon 6.1 tries `tileRetryMax` more times by itself (its `maxReached` comes one
    // attempt early); only a tile it has given up on for good needs reviving.
    if (event.tries < 1 + viewer.tileRetryMax) return;
    status.tilesGivenUp += 1;
    failedTiles.add(event.tile);
    failedUrls.add(event.tile.getUrl());
  });

  // --- Annotations, per slide, in level-0 slide pixels. ---
  const annotations = {}; // slide id -> [{type, points, label}]
  let slide = null;
  let slideWidth = 1;
  let regions = [];
  let tool = "pan";
  let draft = null; // the shape being drawn

  function shapes() { return annotations[slide] || (annotations[slide] = []); }

  function toImage(position) {
    const p = viewer.viewport.viewerElementToImageCoordinates(position);
    return [Math.round(p.x), Math.round(p.y)];
  }
  function toScreen(point) {
    const p = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(point[0], point[1]));
    return p.x.toFixed(1) + "," + p.y.toFixed(1);
  }
  function rectanglePoints(a, b) {
    const [x0, x1] = [Math.min(a[0], b[0]), Math.max(a[0], b[0])];
    const [y0, y1] = [Math.min(a[1], b[1]), Math.max(a[1], b[1])];
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]];
  }
  function addShape(parent, shape, style) {
    if (shape.type === "point") {
      const c = document.createElementNS(SVG, "circle");
      const [x, y] = toScreen(shape.points[0]).split(",");
      c.setAttribute("cx", x); c.setAttribute("cy", y); c.setAttribute("r", 6);
      c.setAttribute("fill", style.stroke);
      parent.appendChild(c);
      return;
    }
    const poly = document.createElementNS(SVG, shape.closed === false ? "polyline" : "polygon");
    poly.setAttribute("points", shape.points.map(toScreen).join(" "));
    poly.setAttribute("fill", style.fill || "none");
    poly.setAttribute("stroke", style.stroke);
    poly.setAttribute("stroke-width", 2);
    if (style.dash) poly.setAttribute("stroke-dasharray", style.dash);
    parent.appendChild(poly);
  }
  function redraw() {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (!slide || viewer.world.getItemCount() === 0) return;
    regions.forEach(function (points) { addShape(svg, { type: "polygon", points: points }, { stroke: "#e0218a", dash: "6 4" }); });
    shapes().forEach(function (shape) { addShape(svg, shape, { stroke: "#00c2ff", fill: "rgba(0,194,255,0.12)" }); });
    if (draft) addShape(svg, draft, { stroke: "#ffd400" });
    document.getElementById("annotation-count").textContent =
      Object.values(annotations).reduce(function (n, list) { return n + list.length; }, 0) + say(" annotations");
  }
  ["animation", "update-viewport", "resize", "open"].forEach(function (e) { viewer.addHandler(e, redraw); });

  function label() { return document.getElementById("annotation-class").value.trim() || "Annotation"; }
  function commit(shape) {
    shape.label = label();
    shapes().push(shape);
    draft = null;
    redraw();
  }

  viewer.addHandler("canvas-press", function (event) {
    if (tool !== "rectangle") return;
    event.preventDefaultAction = true;
    const at = toImage(event.position);
    draft = { type: "rectangle", start: at, points: rectanglePoints(at, at) };
  });
  viewer.addHandler("canvas-drag", function (event) {
    if (tool === "pan") return;
    event.preventDefaultAction = true;
    if (tool === "rectangle" && draft) {
      draft.points = rectanglePoints(draft.start, toImage(event.position));
      redraw();
    }
  });
  viewer.addHandler("canvas-release", function (event) {
    if (tool !== "rectangle" || !draft) return;
    event.preventDefaultAction = true;
    const end = toImage(event.position);
    if (end[0] !== draft.start[0] && end[1] !== draft.start[1]) {
      commit({ type: "rectangle", points: rectanglePoints(draft.start, end) });
    } else {
      draft = null;
      redraw();
    }
  });
  viewer.addHandler("canvas-click", function (event) {
    if (tool === "pan" || !event.quick) return;
    event.preventDefaultAction = true;
    const at = toImage(event.position);
    if (tool === "point") {
      commit({ type: "point", points: [at] });
    } else if (tool === "polygon") {
      if (!draft) draft = { type: "polygon", points: [], closed: false };
      draft.points.push(at);
      redraw();
    }
  });
  function finishPolygon() {
    if (draft && draft.type === "polygon" && draft.points.length >= 3) {
      commit({ type: "polygon", points: draft.points });
    }
  }
  viewer.addHandler("canvas-double-click", function (event) {
    if (tool !== "polygon") return;
    event.preventDefaultAction = true;
    // The double-click's second click added a vertex where the first did: drop it.
    if (draft && draft.type === "polygon" && draft.points.length >= 2) {
      const last = draft.points[draft.points.length - 1];
      const before = draft.points[draft.points.length - 2];
      const a = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(last[0], last[1]));
      const b = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(before[0], before[1]));
      if (Math.hypot(a.x - b.x, a.y - b.y) < 6) draft.points.pop();
    }
    finishPolygon();
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter") finishPolygon();
    if (event.key === "Escape") { draft = null; redraw(); }
  });

  document.querySelectorAll(".toolbar [data-tool]").forEach(function (button) {
    button.addEventListener("click", function () {
      finishPolygon();
      tool = button.dataset.tool;
      draft = null;
      document.querySelectorAll(".toolbar [data-tool]").forEach(function (b) {
        b.setAttribute("aria-pressed", String(b === button));
      });
      redraw();
    });
  });
  document.getElementById("undo").addEventListener("click", function () {
    if (draft) draft = null; else shapes().pop();
    redraw();
  });

  // GeoJSON in slide pixels, QuPath's annotation shape; the slide each shape is on goes in its
  // properties.
  function geojson() {
    const features = [];
    Object.keys(annotations).forEach(function (slideId) {
      annotations[slideId].forEach(function (shape) {
        const geometry = shape.type === "point"
          ? { type: "Point", coordinates: shape.points[0] }
          : { type: "Polygon", coordinates: [shape.points.concat([shape.points[0]])] };
        features.push({
          type: "Feature",
          geometry: geometry,
          properties: { objectType: "annotation", classification: { name: shape.label }, slide_id: slideId },
        });
      });
    });
    return { type: "FeatureCollection", features: features };
  }
  window.grassrootsAnnotations = geojson;
  document.getElementById("export").addEventListener("click", function (event) {
    event.currentTarget.href = "data:application/geo+json," + encodeURIComponent(JSON.stringify(geojson()));
  });

  // --- Slides ---
  function open(tab) {
    finishPolygon();
    slide = tab.dataset.slide;
    status.slide = slide;
    slideWidth = parseFloat(tab.dataset.width) || 1;
    regions = [];
    try {
      const collection = tab.dataset.regions ? JSON.parse(tab.dataset.regions) : { features: [] };
      collection.features.forEach(function (feature) {
        const g = feature.geometry;
        if (g && g.type === "Polygon") regions.push(g.coordinates[0]);
      });
    } catch (error) {
      regions = [];
    }
    tabs.forEach(function (t) { t.setAttribute("aria-pressed", String(t === tab)); });
    viewer.open("/consult/" + referral + "/slides/" + slide + ".dzi");
  }
  tabs.forEach(function (tab) { tab.addEventListener("click", function () { open(tab); }); });
  if (tabs.length > 0 && (mine || answered)) open(tabs[0]);

  // --- The link to the referring edge ---
  function refetchFailedTiles() {
    failedTiles.forEach(function (tile) { tile.exists = true; });
    failedTiles.clear();
    for (let i = 0; i < viewer.world.getItemCount(); i++) {
      // OpenSeadragon 6.1 (pinned) re-plans the tiles it needs on its next frame when asked to.
      viewer.world.getItemAt(i)._needsUpdate = true;
    }
    if (viewer.world.getItemCount() === 0 && slide) {
      const tab = tabs.find(function (t) { return t.dataset.slide === slide; });
      if (tab) open(tab);
    }
    viewer.forceRedraw();
    status.recoveries += 1;
  }
  function pollLink() {
    fetch("/api/v1/referrals/" + referral + "/link", { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (link) {
        const state = link.online ? "online" : "offline";
        if (state === "online" && status.linkState === "offline") refetchFailedTiles();
        status.linkState = state;
        linkStatus.dataset.state = state;
        linkStatus.textContent = (link.online
          ? say("Connected to {}: tiles stream from its slide on demand.")
          : say("The link to {} is down. Tiles already here still show; the rest load when it is back."))
          .replace("{}", link.site);
      })
      .catch(function () {
        status.linkState = "offline";
        linkStatus.dataset.state = "offline";
        linkStatus.textContent = say("The hub cannot be reached. Retrying…");
      })
      .finally(function () { setTimeout(pollLink, 1000); });
  }
  pollLink();

  // --- Live session: the county doctor's viewer follows this one (via the hub, over QUIC). ---
  const live = { sent: 0, acknowledged: 0, edge: "unknown" };
  window.grassrootsLive = live;
  if (mine && !answered) {
    let socket = null;
    let pointerAt = null;
    let pending = false;
    const sendView = function () {
      pending = false;
      if (!socket || socket.readyState !== WebSocket.OPEN || !slide || viewer.world.getItemCount() === 0) return;
      const r = viewer.viewport.viewportToImageRectangle(viewer.viewport.getBounds(true));
      socket.send(JSON.stringify({ slide_id: slide, viewport: [r.x, r.y, r.width, r.height], pointer: pointerAt }));
      live.sent += 1;
    };
    const schedule = function () {
      if (!pending) { pending = true; setTimeout(sendView, 100); }
    };
    const connect = function () {
      const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      socket = new WebSocket(scheme + window.location.host + "/consult/" + referral + "/live");
      socket.onopen = schedule;
      socket.onmessage = function (event) {
        const reply = JSON.parse(event.data);
        if (reply.edge) { live.edge = reply.edge; live.acknowledged += 1; }
      };
      socket.onclose = function () { setTimeout(connect, 1000); };
    };
    connect();
    ["animation", "open"].forEach(function (e) { viewer.addHandler(e, schedule); });
    new OpenSeadragon.MouseTracker({
      element: viewer.canvas,
      moveHandler: function (event) { pointerAt = toImage(event.position); schedule(); },
    });
    setInterval(schedule, 2000); // a doctor who joins late catches up
  }

})();
