// The map: every point written as a few pixels of one ImageData per frame (no DOM node or
// canvas path per point), a second canvas for rings and the selection box, and a grid of
// cells over the data for hover, click and box selection.

import { BACKGROUND, pack, rgb } from "./colours.js";

const BACKGROUND_PIXEL = pack(rgb(BACKGROUND));
const HIT_RADIUS = 7; // CSS pixels around the cursor that count as on a point

/** The pixel offsets (dx, dy pairs) of a dot ``size`` pixels across: a square up to 3,
 * a disc above. */
function disc(size) {
  const offsets = [];
  const r = size / 2;
  for (let dy = 0; dy < size; dy++) {
    for (let dx = 0; dx < size; dx++) {
      if (size <= 3 || (dx + 0.5 - r) ** 2 + (dy + 0.5 - r) ** 2 <= r * r + 0.5) offsets.push(dx, dy);
    }
  }
  return Int32Array.from(offsets);
}

export class PointMap {
  constructor(container, { onHover, onClick, onSelect }) {
    this.container = container;
    this.canvas = container.querySelector("#points");
    this.overlay = container.querySelector("#overlay");
    this.context = this.canvas.getContext("2d");
    this.overlayContext = this.overlay.getContext("2d");
    this.callbacks = { onHover, onClick, onSelect };
    this.n = 0;
    this.view = { cx: 0, cy: 0, scale: 1 };
    this.hovered = -1;
    this.focus = -1;
    this.marked = [];
    this.selection = null;
    this.box = null;
    this.drawn = 0;
    this.pending = false;
    this.listen();
    new ResizeObserver(() => this.resize()).observe(container);
    this.resize();
  }

  /** Points at ``x``, ``y`` (Float32Array each), all shown. */
  setData(x, y) {
    this.x = x;
    this.y = y;
    this.n = x.length;
    this.canvas.dataset.points = String(this.n);
    this.buildGrid();
    this.hovered = -1;
    this.focus = -1;
    this.marked = [];
    this.selection = null;
    this.fit();
  }

  /** Per-point RGBA pixels, their faded versions, and the order to draw points in. */
  setColours(colours, faded, order) {
    this.colours = colours;
    this.faded = faded;
    this.order = order;
    this.requestDraw();
  }

  setSelection(mask) {
    this.selection = mask;
    this.requestDraw();
  }

  setFocus(index, marked = []) {
    this.focus = index;
    this.marked = marked;
    this.drawOverlay();
  }

  // --- view -----------------------------------------------------------------
  resize() {
    const ratio = window.devicePixelRatio || 1;
    const { width, height } = this.container.getBoundingClientRect();
    this.width = Math.max(1, width);
    this.height = Math.max(1, height);
    for (const canvas of [this.canvas, this.overlay]) {
      canvas.width = Math.round(this.width * ratio);
      canvas.height = Math.round(this.height * ratio);
    }
    this.ratio = ratio;
    this.image = null;
    this.requestDraw();
  }

  fit() {
    if (!this.n) return;
    const { minX, maxX, minY, maxY } = this.bounds;
    const spanX = Math.max(maxX - minX, 1e-9);
    const spanY = Math.max(maxY - minY, 1e-9);
    this.view = {
      cx: (minX + maxX) / 2,
      cy: (minY + maxY) / 2,
      scale: 0.9 * Math.min((this.width - 40) / spanX, (this.height - 40) / spanY),
    };
    this.requestDraw();
  }

  zoom(factor, px = this.width / 2, py = this.height / 2) {
    const [dx, dy] = this.toData(px, py);
    this.view.scale *= factor;
    // keep the data point under the cursor where it is
    this.view.cx = dx - (px - this.width / 2) / this.view.scale;
    this.view.cy = dy + (py - this.height / 2) / this.view.scale;
    this.requestDraw();
  }

  toData(px, py) {
    const { cx, cy, scale } = this.view;
    return [cx + (px - this.width / 2) / scale, cy - (py - this.height / 2) / scale];
  }

  toScreen(i) {
    const { cx, cy, scale } = this.view;
    return [(this.x[i] - cx) * scale + this.width / 2, this.height / 2 - (this.y[i] - cy) * scale];
  }

  /** Where point ``i`` is on the page, in client coordinates. */
  screenPosition(i) {
    const box = this.canvas.getBoundingClientRect();
    const [sx, sy] = this.toScreen(i);
    return { x: box.left + sx, y: box.top + sy };
  }

  // --- drawing --------------------------------------------------------------
  requestDraw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const width = this.canvas.width;
    const height = this.canvas.height;
    if (!this.image || this.image.width !== width || this.image.height !== height) {
      this.image = this.context.createImageData(width, height);
      this.pixels = new Uint32Array(this.image.data.buffer);
    }
    const pixels = this.pixels;
    pixels.fill(BACKGROUND_PIXEL);
    let drawn = 0;
    if (this.n && this.colours) {
      const { cx, cy, scale } = this.view;
      const s = scale * this.ratio;
      const ox = width / 2 - cx * s;
      const oy = height / 2 + cy * s;
      const base = this.n > 30000 ? 2 : this.n > 3000 ? 3 : 4;
      const size = Math.max(1, Math.round(base * this.ratio));
      const half = size >> 1;
      const dots = disc(size);
      const { x, y, order, colours, faded } = this;
      const selection = this.selection;
      const passes = selection ? [0, 1] : [-1];
      for (const pass of passes) {
        for (let k = 0; k < order.length; k++) {
          const i = order[k];
          if (pass >= 0 && selection[i] !== pass) continue;
          const px = Math.floor(x[i] * s + ox) - half;
          const py = Math.floor(oy - y[i] * s) - half;
          if (px + size <= 0 || py + size <= 0 || px >= width || py >= height) continue;
          drawn++;
          const colour = pass === 0 ? faded[i] : colours[i];
          if (px >= 0 && py >= 0 && px + size <= width && py + size <= height) {
            const origin = py * width + px;
            for (let d = 0; d < dots.length; d += 2) pixels[origin + dots[d + 1] * width + dots[d]] = colour;
          } else {
            for (let d = 0; d < dots.length; d += 2) {
              const col = px + dots[d];
              const row = py + dots[d + 1];
              if (col >= 0 && row >= 0 && col < width && row < height) pixels[row * width + col] = colour;
            }
          }
        }
      }
    }
    this.context.putImageData(this.image, 0, 0);
    this.drawn = drawn;
    this.canvas.dataset.drawn = String(drawn);
    this.drawOverlay();
  }

  drawOverlay() {
    const c = this.overlayContext;
    c.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
    c.clearRect(0, 0, this.width, this.height);
    if (!this.n) return;
    const ring = (i, radius, colour, width) => {
      const [sx, sy] = this.toScreen(i);
      c.beginPath();
      c.arc(sx, sy, radius, 0, 2 * Math.PI);
      c.strokeStyle = colour;
      c.lineWidth = width;
      c.stroke();
    };
    for (const i of this.marked) ring(i, 6, "rgba(29, 36, 48, .75)", 1.5);
    if (this.focus >= 0) {
      ring(this.focus, 10, "#ffffff", 4);
      ring(this.focus, 10, "#d92d20", 2);
    }
    if (this.hovered >= 0) ring(this.hovered, 8, "#1d2430", 2);
    if (this.box) {
      const { x0, y0, x1, y1 } = this.box;
      c.fillStyle = "rgba(40, 86, 199, .08)";
      c.strokeStyle = "rgba(40, 86, 199, .8)";
      c.lineWidth = 1;
      c.fillRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
      c.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    }
  }

  // --- hit testing ----------------------------------------------------------
  buildGrid() {
    const { x, y, n } = this;
    let minX = Infinity;
    let maxX = -Infinity;
    let minY = Infinity;
    let maxY = -Infinity;
    for (let i = 0; i < n; i++) {
      if (x[i] < minX) minX = x[i];
      if (x[i] > maxX) maxX = x[i];
      if (y[i] < minY) minY = y[i];
      if (y[i] > maxY) maxY = y[i];
    }
    if (!n) minX = maxX = minY = maxY = 0;
    this.bounds = { minX, maxX, minY, maxY };
    // about four points a cell on average
    const side = Math.max(8, Math.min(1024, Math.ceil(Math.sqrt(n / 4))));
    const cellX = Math.max(maxX - minX, 1e-9) / side;
    const cellY = Math.max(maxY - minY, 1e-9) / side;
    const cells = new Int32Array(n);
    const starts = new Int32Array(side * side + 1);
    for (let i = 0; i < n; i++) {
      const gx = Math.min(side - 1, Math.floor((x[i] - minX) / cellX));
      const gy = Math.min(side - 1, Math.floor((y[i] - minY) / cellY));
      cells[i] = gy * side + gx;
      starts[cells[i] + 1]++;
    }
    for (let c = 0; c < side * side; c++) starts[c + 1] += starts[c];
    const fill = starts.slice(0, side * side);
    const items = new Int32Array(n);
    for (let i = 0; i < n; i++) items[fill[cells[i]]++] = i;
    this.grid = { side, cellX, cellY, starts, items };
  }

  /** Indices of the points in the data rectangle, through the cells it overlaps. */
  *pointsIn(x0, y0, x1, y1) {
    const { side, cellX, cellY, starts, items } = this.grid;
    const { minX, minY } = this.bounds;
    const clamp = (v) => Math.max(0, Math.min(side - 1, v));
    const gx0 = clamp(Math.floor((x0 - minX) / cellX));
    const gx1 = clamp(Math.floor((x1 - minX) / cellX));
    const gy0 = clamp(Math.floor((y0 - minY) / cellY));
    const gy1 = clamp(Math.floor((y1 - minY) / cellY));
    for (let gy = gy0; gy <= gy1; gy++) {
      for (let gx = gx0; gx <= gx1; gx++) {
        const cell = gy * side + gx;
        for (let k = starts[cell]; k < starts[cell + 1]; k++) {
          const i = items[k];
          if (this.x[i] >= x0 && this.x[i] <= x1 && this.y[i] >= y0 && this.y[i] <= y1) yield i;
        }
      }
    }
  }

  /** The point nearest to the screen position within ``HIT_RADIUS``, or -1. */
  pointAt(px, py) {
    if (!this.n) return -1;
    const [dx, dy] = this.toData(px, py);
    const r = HIT_RADIUS / this.view.scale;
    let best = -1;
    let bestDistance = r * r;
    for (const i of this.pointsIn(dx - r, dy - r, dx + r, dy + r)) {
      const d = (this.x[i] - dx) ** 2 + (this.y[i] - dy) ** 2;
      if (d < bestDistance) {
        best = i;
        bestDistance = d;
      }
    }
    return best;
  }

  // --- input ----------------------------------------------------------------
  listen() {
    const local = (event) => {
      const box = this.canvas.getBoundingClientRect();
      return [event.clientX - box.left, event.clientY - box.top];
    };
    let drag = null;
    this.canvas.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      const [px, py] = local(event);
      this.canvas.setPointerCapture(event.pointerId);
      drag = { px, py, view: { ...this.view }, moved: false, select: event.shiftKey };
      this.container.classList.add(drag.select ? "selecting" : "panning");
    });
    this.canvas.addEventListener("pointermove", (event) => {
      const [px, py] = local(event);
      if (drag) {
        if (Math.abs(px - drag.px) + Math.abs(py - drag.py) > 3) drag.moved = true;
        if (drag.select) {
          this.box = { x0: drag.px, y0: drag.py, x1: px, y1: py };
          this.drawOverlay();
        } else if (drag.moved) {
          this.view.cx = drag.view.cx - (px - drag.px) / this.view.scale;
          this.view.cy = drag.view.cy + (py - drag.py) / this.view.scale;
          this.requestDraw();
        }
        return;
      }
      const hit = this.pointAt(px, py);
      if (hit !== this.hovered) {
        this.hovered = hit;
        this.drawOverlay();
      }
      this.callbacks.onHover(hit, px, py);
    });
    this.canvas.addEventListener("pointerup", (event) => {
      if (!drag) return;
      const [px, py] = local(event);
      const done = drag;
      drag = null;
      this.container.classList.remove("selecting", "panning");
      if (done.select && done.moved) {
        const [ax, ay] = this.toData(done.px, done.py);
        const [bx, by] = this.toData(px, py);
        const chosen = [
          ...this.pointsIn(Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx), Math.max(ay, by)),
        ];
        this.box = null;
        this.drawOverlay();
        this.callbacks.onSelect(chosen, event.ctrlKey || event.metaKey);
      } else if (!done.moved) {
        this.box = null;
        this.callbacks.onClick(this.pointAt(px, py));
      }
    });
    this.canvas.addEventListener("pointerleave", () => {
      if (this.hovered !== -1) {
        this.hovered = -1;
        this.drawOverlay();
      }
      this.callbacks.onHover(-1, 0, 0);
    });
    this.canvas.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        const [px, py] = local(event);
        this.zoom(Math.exp(-event.deltaY * 0.0015), px, py);
      },
      { passive: false },
    );
    this.canvas.addEventListener("dblclick", () => this.fit());
  }
}
