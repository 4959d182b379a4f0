// DOM and formatting helpers of the dashboard.
//
// Every text that comes from the server (bucket names, reasons, actors) goes into the page
// through textContent or attributes set one by one, never through innerHTML, so no server
// string can become markup.

const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * Make an HTML element.
 * props: text (textContent), className, style (an object of CSS properties), and any
 * other key as an attribute;
 * children: nodes or strings (strings become text nodes); null/undefined are skipped.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  applyProps(node, props);
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Make an SVG element with the given attributes (text: its textContent). */
export function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  applyProps(node, attrs);
  return node;
}

function applyProps(node, props) {
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "className") node.setAttribute("class", value);
    // Through the CSSOM, which the page's Content-Security-Policy allows (style="" it does not).
    else if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

/** Replace the children of the element with id ``id``. */
export function fill(id, ...children) {
  const node = document.getElementById(id);
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

/** A table row of cells; a cell is a node, a string, or {text, className, title, node}. */
export function row(cells, className) {
  const tr = el("tr", { className });
  for (const cell of cells) tr.append(cellOf(cell));
  return tr;
}

function cellOf(cell) {
  if (cell instanceof Node) return el("td", {}, cell);
  if (cell === null || cell === undefined || typeof cell !== "object") {
    return el("td", { text: cell ?? "" });
  }
  const { node, ...props } = cell;
  return el("td", props, node);
}

/** A table body's rows, or one row saying there is nothing to show. */
export function fillBody(tableId, rows, emptyText) {
  const body = document.querySelector(`#${tableId} tbody`);
  const columns = document.querySelectorAll(`#${tableId} thead th`).length || 1;
  if (rows.length) body.replaceChildren(...rows);
  else body.replaceChildren(el("tr", {}, el("td", { colspan: columns, className: "empty", text: emptyText })));
}

/** A definition list's entries from [term, value] pairs (value: string or node). */
export function facts(id, pairs) {
  const items = [];
  for (const [term, value] of pairs) {
    items.push(el("dt", { text: term }), el("dd", {}, value ?? "–"));
  }
  fill(id, items);
}

/** A small coloured label, e.g. a status or a gate verdict. */
export function badge(text, kind) {
  return el("span", { className: `badge ${kind || ""}`.trim(), text });
}

// --- numbers and times ----------------------------------------------------------------

export function isNum(x) {
  return typeof x === "number" && Number.isFinite(x);
}

/** 0.756 -> "75.6%"; missing -> "–". */
export function pct(x, digits = 1) {
  return isNum(x) ? `${(100 * x).toFixed(digits)}%` : "–";
}

export function num(x, digits = 2) {
  return isNum(x) ? x.toFixed(digits) : "–";
}

/** A signed number (for transfer and deltas): +0.12 / -0.05. */
export function signed(x, digits = 3) {
  return isNum(x) ? `${x >= 0 ? "+" : ""}${x.toFixed(digits)}` : "–";
}

export function int(x) {
  return isNum(x) ? Math.round(x).toLocaleString("en-US") : "–";
}

/** An ISO time as local "YYYY-MM-DD HH:MM:SS" (absolute, so it needs no re-render). */
export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} `
    + `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** "v3", or "base" for the base model (version null / 0). */
export function versionName(v) {
  return v === null || v === undefined || v === 0 ? "base" : `v${v}`;
}

// --- colours ----------------------------------------------------------------------------

// Distinct line colours (Tableau 10), assigned to buckets in name order.
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
  "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

/** A colour per bucket name, stable while the set of buckets stays the same. */
export function bucketColors(names) {
  const colors = new Map();
  [...new Set(names)].sort().forEach((name, i) => colors.set(name, PALETTE[i % PALETTE.length]));
  return colors;
}

/** Heat-map colour of an accuracy in [0, 1]: red (0) through yellow to green (1). */
export function heat(x) {
  if (!isNum(x)) return "";
  const clamped = Math.max(0, Math.min(1, x));
  return `hsl(${Math.round(120 * clamped)}, 70%, 78%)`;
}
