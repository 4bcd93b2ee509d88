// The measuring marks both stack viewers draw over a picture (the edge's own,
// edge/assets/web/stack.js, and the hub's view of a referred series, images.js): a line for a
// length, a rectangle for a region, in the coordinates of the overlay's viewBox, replacing the
// last mark.
(function () {
  "use strict";
  window.grassrootsMark = function (overlay, kind, a, b, strokeWidth) {
    const ns = "http://www.w3.org/2000/svg";
    overlay.innerHTML = "";
    const shape = document.createElementNS(ns, kind === "length" ? "line" : "rect");
    if (kind === "length") {
      shape.setAttribute("x1", a.x); shape.setAttribute("y1", a.y);
      shape.setAttribute("x2", b.x); shape.setAttribute("y2", b.y);
    } else {
      shape.setAttribute("x", Math.min(a.x, b.x)); shape.setAttribute("y", Math.min(a.y, b.y));
      shape.setAttribute("width", Math.abs(b.x - a.x)); shape.setAttribute("height", Math.abs(b.y - a.y));
      shape.setAttribute("fill", "none");
    }
    shape.setAttribute("stroke", "#ffd400");
    shape.setAttribute("stroke-width", strokeWidth);
    overlay.appendChild(shape);
  };
})();
