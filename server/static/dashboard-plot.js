// A small SVG line plot: one line per series over a shared x axis, y in [0, 1].
//
// Hand-written so that the page needs no charting library (nothing is fetched from the
// internet). Labels are SVG text nodes filled through textContent.

import { el, svg } from "./dashboard-dom.js";

const WIDTH = 760;
const HEIGHT = 260;
const MARGIN = { top: 12, right: 16, bottom: 34, left: 46 };
const Y_TICKS = [0, 0.25, 0.5, 0.75, 1];

/** 1, 2 or 5 times a power of ten, near ``span / count``: readable tick spacing. */
export function niceStep(span, count = 5) {
  if (!(span > 0)) return 1;
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const scaled = raw / power;
  const nice = scaled < 1.5 ? 1 : scaled < 3.5 ? 2 : scaled < 7.5 ? 5 : 10;
  return Math.max(1, nice * power); // steps are whole training steps
}

/** The x range over every point, widened when all points share one x. */
function xDomain(series) {
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  let lo = Math.min(...xs);
  let hi = Math.max(...xs);
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  return [lo, hi];
}

function scales(domain) {
  const [lo, hi] = domain;
  const innerW = WIDTH - MARGIN.left - MARGIN.right;
  const innerH = HEIGHT - MARGIN.top - MARGIN.bottom;
  return {
    x: (v) => MARGIN.left + ((v - lo) / (hi - lo)) * innerW,
    y: (v) => MARGIN.top + (1 - v) * innerH,
  };
}

function yAxis(scale) {
  const group = svg("g", { className: "axis y-axis" });
  for (const t of Y_TICKS) {
    const y = scale.y(t);
    group.append(
      svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y, y2: y, className: "grid" }),
      svg("text", { x: MARGIN.left - 6, y: y + 4, "text-anchor": "end", text: `${t * 100}%` }),
    );
  }
  return group;
}

function xAxis(scale, domain) {
  const [lo, hi] = domain;
  const group = svg("g", { className: "axis x-axis" });
  const base = HEIGHT - MARGIN.bottom;
  group.append(svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: base, y2: base }));
  const step = niceStep(hi - lo);
  for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) {
    const x = scale.x(t);
    group.append(
      svg("line", { x1: x, x2: x, y1: base, y2: base + 4 }),
      svg("text", { x, y: base + 16, "text-anchor": "middle", text: String(t) }),
    );
  }
  group.append(svg("text", {
    x: (MARGIN.left + WIDTH - MARGIN.right) / 2, y: HEIGHT - 2, "text-anchor": "middle",
    className: "axis-title", text: "training step",
  }));
  return group;
}

function seriesGroup(s, scale) {
  const group = svg("g", { className: "series", "data-series": s.name });
  const points = [...s.points].sort((a, b) => a.x - b.x);
  const coords = points.map((p) => `${scale.x(p.x).toFixed(1)},${scale.y(p.y).toFixed(1)}`);
  group.append(svg("polyline", { points: coords.join(" "), fill: "none", stroke: s.color,
    "stroke-width": 2, "stroke-linejoin": "round" }));
  for (const p of points) {
    const dot = svg("circle", { cx: scale.x(p.x), cy: scale.y(p.y), r: 3.5, fill: s.color });
    // A native tooltip: <title> text, set through textContent like every other label.
    dot.append(svg("title", { text: p.label }));
    group.append(dot);
  }
  return group;
}

function legend(series) {
  return el("ul", { className: "legend" }, series.map((s) => el("li", {},
    el("span", { className: "swatch", style: { backgroundColor: s.color } }), s.name)));
}

/**
 * The plot for ``series`` ([{name, color, points: [{x, y, label}]}], y in [0, 1]) with its
 * legend, or a note when there is nothing to draw yet.
 */
export function linePlot(series, emptyText) {
  const drawn = series.filter((s) => s.points.length);
  if (!drawn.length) return el("p", { className: "empty", text: emptyText });
  const domain = xDomain(drawn);
  const scale = scales(domain);
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", className: "chart",
    "aria-label": "probe accuracy by training step",
  });
  chart.append(yAxis(scale), xAxis(scale, domain), ...drawn.map((s) => seriesGroup(s, scale)));
  return el("div", { className: "plot-body" }, chart, legend(drawn));
}
