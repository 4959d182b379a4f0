// The dashboard's entry point: the API key field, the refresh loop and the admin actions.

import * as api from "./dashboard-api.js";
import { bucketColors, el, fill, versionName } from "./dashboard-dom.js";
import {
  learnerState, renderAccuracyPlot, renderBuckets, renderDecisions, renderLearner,
  renderTeacherFacts, trackProgress,
} from "./dashboard-panels.js";
import { renderHistory, renderMatrix, renderVersions } from "./dashboard-registry.js";

// Seconds between refreshes; ``/?refresh=N`` (1-3600) overrides it for this page.
const DEFAULT_REFRESH_S = 5;
const MAX_MESSAGES = 5;

const page = {
  timer: null,
  loading: false,
  again: false,
  // A rejected key stops the polling: retrying it would only feed the server's
  // failed-authentication limit until this address is throttled.
  keyRejected: false,
  keyAccepted: false, // the current key has answered a read
  progress: undefined, // the learner's step and when it last moved (trackProgress)
  rendered: new Map(), // panel -> JSON of the inputs it was last drawn from
};

function refreshSeconds() {
  const asked = Number(new URLSearchParams(window.location.search).get("refresh"));
  return asked >= 1 && asked <= 3600 ? asked : DEFAULT_REFRESH_S;
}

// --- messages -----------------------------------------------------------------------------

/** Show a message (kind: error | ok) until dismissed; the newest few are kept. */
function notify(text, kind = "error") {
  const box = document.getElementById("messages");
  const close = el("button", { type: "button", className: "close", "aria-label": "dismiss", text: "×" });
  const message = el("div", { className: `message ${kind}` }, el("span", { text }), close);
  close.addEventListener("click", () => message.remove());
  box.prepend(message);
  while (box.children.length > MAX_MESSAGES) box.lastElementChild.remove();
}

/** The one line that reports the state of the last refresh (replaced each time). */
function setLoadStatus(text, isError) {
  const status = document.getElementById("refreshed");
  status.textContent = text;
  status.className = isError ? "error-text" : "muted";
}

// --- rendering ----------------------------------------------------------------------------

/** Redraw a panel only when its inputs changed, so that a refresh does not reset what the
 * operator is looking at (a hovered tooltip, a button about to be clicked). */
function renderIfChanged(panel, inputs, draw) {
  const json = JSON.stringify(inputs);
  if (page.rendered.get(panel) === json) return;
  page.rendered.set(panel, json);
  draw();
}

function render(data) {
  const { buckets, teacher, evaluations, adapters, active, history, learner } = data;
  const names = [...(buckets || []).map((b) => b.name), ...((evaluations && evaluations.buckets) || [])];
  const colors = bucketColors(names);
  if (active) document.getElementById("active-model").textContent = active.model;
  if (learner) {
    const now = Date.now();
    page.progress = trackProgress(page.progress, learner.status, now);
    const state = learnerState(learner, teacher, page.progress, now);
    renderIfChanged("learner", [learner.status, learner.holder, learner.alive, learner.paused, state,
      teacher && teacher.resting], () => renderLearner(learner, teacher, state));
  }
  if (buckets) renderIfChanged("buckets", [buckets, teacher, [...colors]], () => renderBuckets(buckets, teacher, colors));
  if (evaluations || teacher) {
    renderIfChanged("plot", [evaluations, teacher && teacher.decisions, [...colors]],
      () => renderAccuracyPlot(evaluations, teacher, colors));
  }
  if (teacher) {
    renderIfChanged("teacher", teacher, () => {
      renderTeacherFacts(teacher);
      renderDecisions(teacher);
    });
  }
  if (adapters) renderIfChanged("versions", adapters, () => renderVersions(adapters, promoteVersion));
  if (history) renderIfChanged("history", history, () => renderHistory(history));
  if (evaluations) renderIfChanged("matrix", evaluations, () => renderMatrix(evaluations));
}

// --- the refresh loop -----------------------------------------------------------------------

function schedule(seconds = refreshSeconds()) {
  clearTimeout(page.timer);
  page.timer = setTimeout(refresh, seconds * 1000);
}

/** The first error of a refresh, by the endpoint that gave it. */
function firstError(errors) {
  const entries = Object.entries(errors);
  return entries.length ? entries[0] : null;
}

/** Read everything and redraw; then schedule the next refresh (unless the key failed). */
async function refresh() {
  clearTimeout(page.timer);
  if (!api.getKey()) {
    setLoadStatus("enter an API key to load data", true);
    return;
  }
  if (document.hidden) return; // a background tab catches up when it is shown again
  if (page.loading) {
    page.again = true; // asked during a read (after an action): read once more after it
    return;
  }
  page.loading = true;
  page.again = false;
  const key = api.getKey();
  let wait;
  try {
    const read = await api.readAll(!page.keyAccepted);
    if (api.getKey() !== key) {
      page.again = true; // the key changed during the read: its answer is not for this key
    } else {
      page.keyAccepted = page.keyAccepted || !!read.data.active;
      wait = afterRead(read);
    }
  } finally {
    page.loading = false;
  }
  if (page.again) refresh();
  else if (wait !== null) schedule(wait);
}

/** Draw a read and report it; returns the seconds until the next one (null: stop). */
function afterRead({ data, errors }) {
  render(data);
  const failed = firstError(errors);
  if (!failed) {
    setLoadStatus(`updated ${new Date().toLocaleTimeString()}`, false);
    return refreshSeconds();
  }
  const [name, error] = failed;
  setLoadStatus(`${name}: ${error.message}`, true);
  if (error.status === 401) {
    page.keyRejected = true;
    setKeyState("the key was rejected: enter another");
    return null; // no more polling with a key the server refuses
  }
  return error.retryAfter || refreshSeconds();
}

// --- the API key ------------------------------------------------------------------------------

function setKeyState(text) {
  document.getElementById("key-state").textContent = text;
}

function useKey(key) {
  api.setKey(key);
  page.keyRejected = false;
  page.keyAccepted = false;
  page.rendered.clear();
  setKeyState(key ? "key kept for this tab" : "no key");
  refresh();
}

function setUpKeyForm() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    input.value = ""; // not left in the field: it is in sessionStorage now
    if (key) useKey(key);
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    api.setKey("");
    window.location.reload(); // and nothing read with the key stays on the page
  });
  setKeyState(api.getKey() ? "key kept for this tab" : "no key");
}

// --- admin actions ----------------------------------------------------------------------------

/** Run an admin action: report its result or the server's error, then refresh at once. */
async function act(description, action, describeResult) {
  if (!api.getKey()) {
    notify(`${description}: enter an admin API key first`);
    return;
  }
  try {
    const result = await action();
    notify(describeResult(result), "ok");
  } catch (error) {
    notify(`${description} failed: ${error.message}`);
  }
  refresh();
}

function eventText(event) {
  return `${event.action}: ${versionName(event.from_version)} → ${versionName(event.to_version)} (${event.reason})`;
}

function promoteVersion(adapter) {
  const name = versionName(adapter.version);
  const report = adapter.gate_report || {};
  const failed = adapter.status === "rejected" || report.verdict === "reject";
  const question = failed
    ? `${name} failed the gate: ${report.summary || "no summary"}.\nPromote it anyway (logged as forced)?`
    : `Serve ${name} from now on?`;
  if (!window.confirm(question)) return;
  act(`promote ${name}`, () => api.promote(adapter.version, failed), eventText);
}

function rollbackActive() {
  if (!window.confirm("Roll back to the version active before the current one?")) return;
  act("rollback", () => api.rollback(), eventText);
}

function learnerCommand(command) {
  act(`${command} the learner`, () => api.learnerCommand(command),
    (r) => `learner ${r.command} requested (command ${r.command_id})`);
}

function setUpActions() {
  document.getElementById("rollback").addEventListener("click", rollbackActive);
  document.getElementById("learner-pause").addEventListener("click", () => learnerCommand("pause"));
  document.getElementById("learner-resume").addEventListener("click", () => learnerCommand("resume"));
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && !page.keyRejected) refresh();
  });
}

setUpKeyForm();
setUpActions();
fill("accuracy-plot", el("p", { className: "empty", text: "Loading…" }));
refresh();
