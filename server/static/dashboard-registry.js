// The adapter versions (lineage with gate verdicts), the registry history and the
// accuracy matrix heat map.

import {
  badge, el, fillBody, heat, int, isNum, num, pct, row, signed, versionName, when,
} from "./dashboard-dom.js";

const VERDICT_KIND = { promote: "good", reject: "bad", hold: "warn", abandoned: "muted" };
const STATUS_KIND = { promoted: "good", rejected: "bad", candidate: "warn", retired: "muted" };
// Statuses whose files can be made active (others were never finished or were pruned).
const PROMOTABLE = new Set(["candidate", "promoted", "rejected"]);

/**
 * The versions in lineage order: each one after its parent, children by version, with
 * its depth below the base model. A parent that is not listed counts as a root.
 */
export function lineage(adapters) {
  const known = new Set(adapters.map((a) => a.version));
  const children = new Map();
  for (const a of adapters) {
    const parent = known.has(a.parent_version) ? a.parent_version : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(a);
  }
  const ordered = [];
  // Iterative depth-first walk: a long lineage must not overflow the call stack.
  const stack = [...(children.get(null) || [])].sort((a, b) => b.version - a.version)
    .map((a) => [a, 0]);
  while (stack.length) {
    const [adapter, depth] = stack.pop();
    ordered.push({ adapter, depth });
    const kids = [...(children.get(adapter.version) || [])].sort((a, b) => b.version - a.version);
    for (const kid of kids) stack.push([kid, depth + 1]);
  }
  return ordered;
}

function gateCell(report) {
  if (!report || !report.verdict) return el("span", { className: "muted", text: "not gated" });
  const failures = Array.isArray(report.failures) ? report.failures : [];
  return el("div", { className: "gate", title: failures.join("\n") || null },
    badge(report.verdict, VERDICT_KIND[report.verdict] || ""), " ",
    el("span", { className: "reason", text: report.summary || "" }));
}

function versionLabel(adapter, depth) {
  const label = el("span", { className: "version-label", style: { paddingLeft: `${depth * 1.2}em` } },
    depth ? el("span", { className: "muted", text: "↳ " }) : null,
    el("strong", { text: versionName(adapter.version) }),
    adapter.active ? badge("active", "good") : null);
  label.title = adapter.parent_version
    ? `trained from ${versionName(adapter.parent_version)}` : "trained from the base model";
  return label;
}

function promoteButton(adapter, onPromote) {
  if (adapter.active || !PROMOTABLE.has(adapter.status)) return "";
  const button = el("button", { type: "button", className: "admin promote", text: "Promote",
    "data-version": adapter.version });
  button.addEventListener("click", () => onPromote(adapter));
  return button;
}

function versionRow({ adapter, depth }, onPromote) {
  const evaluation = adapter.evaluation || {};
  return row([
    versionLabel(adapter, depth),
    badge(adapter.status, STATUS_KIND[adapter.status] || ""),
    { text: int(adapter.train_step), className: "num" },
    gateCell(adapter.gate_report),
    { text: pct(evaluation.average_accuracy), className: "num" },
    { text: signed(evaluation.backward_transfer), className: "num" },
    { text: num(evaluation.forgetting, 3), className: "num" },
    { text: when(adapter.created_at), className: "nowrap" },
    promoteButton(adapter, onPromote),
  ], adapter.active ? "version active" : "version");
}

export function renderVersions(adapters, onPromote) {
  fillBody("versions-table", lineage(adapters || []).map((entry) => versionRow(entry, onPromote)),
    "No adapter versions yet: the learner writes one every few hundred steps.");
}

function historyRow(event) {
  return row([
    { text: when(event.created_at), className: "nowrap" },
    badge(event.action, event.action === "rollback" ? "warn" : event.action === "force" ? "bad" : ""),
    event.actor,
    `${versionName(event.from_version)} → ${versionName(event.to_version)}`,
    { text: event.reason, className: "reason" },
  ], `event event-${event.action}`);
}

export function renderHistory(history) {
  // Newest first: the latest change is what an operator looks for.
  const events = [...(history || [])].reverse();
  fillBody("history-table", events.map(historyRow), "The active version has never changed.");
}

// --- accuracy matrix -----------------------------------------------------------------------

function matrixHead(buckets) {
  const head = document.querySelector("#matrix-table thead");
  head.replaceChildren(el("tr", {},
    el("th", { text: "model" }),
    buckets.map((b) => el("th", { className: "num", text: b })),
    el("th", { className: "num", text: "avg" }),
    el("th", { className: "num", text: "BWT" }),
    el("th", { className: "num", text: "forgetting" }),
    el("th", { className: "num", text: "NFR" })));
}

function heatCell(v, bucket) {
  const acc = v.accuracy ? v.accuracy[bucket] : undefined;
  if (!isNum(acc)) return { text: "–", className: "num cell missing" };
  const probes = v.probes ? v.probes[bucket] : undefined;
  const forgot = v.forgetting_by_bucket ? v.forgetting_by_bucket[bucket] : undefined;
  const title = `${versionName(v.version)} on ${bucket}: ${pct(acc)}`
    + (isNum(probes) ? ` of ${probes} probes` : "")
    + (isNum(forgot) && forgot > 0 ? `; forgot ${pct(forgot)}` : "");
  return { text: pct(acc, 0), className: "num cell", title, style: { backgroundColor: heat(acc) } };
}

function matrixRow(v, buckets) {
  const nfr = v.negative_flip_rate;
  const name = el("span", {}, el("strong", { text: versionName(v.version) }),
    v.active ? badge("active", "good") : null,
    v.status && v.status !== "base" ? el("span", { className: "muted", text: ` ${v.status}` }) : null);
  return row([
    name,
    ...buckets.map((b) => heatCell(v, b)),
    { text: pct(v.average_accuracy), className: "num" },
    { text: signed(v.backward_transfer), className: "num" },
    { text: num(v.forgetting, 3), className: "num" },
    { text: nfr ? `${pct(nfr.rate)} (${nfr.lost}/${nfr.probes})` : "–", className: "num" },
  ], v.active ? "active" : "");
}

export function renderMatrix(evaluations) {
  const buckets = (evaluations && evaluations.buckets) || [];
  matrixHead(buckets);
  fillBody("matrix-table", ((evaluations && evaluations.versions) || []).map((v) => matrixRow(v, buckets)),
    "No model has been evaluated yet.");
}
