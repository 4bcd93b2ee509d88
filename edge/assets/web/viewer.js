// Grassroots slide viewer: OpenSeadragon over the edge's Deep Zoom tiles, with a navigator and a
// scale bar from the slide's microns per pixel. Keyboard (arrows, +/-, 0) and touch (pinch, drag)
// come with OpenSeadragon. Tiles come from this edge only; nothing loads from the internet.
(function () {
  "use strict";
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
  viewer.addHandler("tile-loaded", function () { status.tilesLoaded += 1; });
  viewer.addHandler("tile-load-failed", function () {
    status.tilesFailed += 1;
    document.getElementById("viewer-message").textContent = "Some tiles could not be loaded; retrying as you move.";
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
  viewer.addHandler("open", updateScaleBar);
  viewer.addHandler("animation", updateScaleBar);
  viewer.addHandler("resize", updateScaleBar);
})();
