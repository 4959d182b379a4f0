// The learner, buckets and teacher panels, and the probe accuracy plot.

import {
  badge, el, facts, fill, fillBody, int, isNum, num, pct, row, versionName, when,
} from "./dashboard-dom.js";
import { linePlot } from "./dashboard-plot.js";

// --- learner ----------------------------------------------------------------------------

// A learner whose step has not moved for this long counts as idle. Its status is written
// with each lease renewal (every few seconds), so a shorter window would flicker.
const IDLE_AFTER_S = 30;

/**
 * Follow the learner's step between reads: {step, movedAt} with the time (ms) it last
 * changed. At the first read a learner with data is taken to have just trained, one
 * without as idle since ever.
 */
export function trackProgress(previous, status, now) {
  const step = status ? status.step : undefined;
  if (!isNum(step)) return { step, movedAt: -Infinity };
  if (previous && isNum(previous.step)) {
    return { step, movedAt: step !== previous.step ? now : previous.movedAt };
  }
  const hasData = status.train_examples > 0 && status.buckets > 0;
  return { step, movedAt: hasData ? now : -Infinity };
}

/**
 * The learner's state in a word: offline (no live lease holder), paused, resting (the
 * teacher found no learnable bucket), training (its step moved within IDLE_AFTER_S) or
 * idle (alive, with nothing to train on).
 */
export function learnerState(learner, teacher, progress, now) {
  if (!learner || !learner.holder || !learner.alive) return "offline";
  const status = learner.status || {};
  if (learner.paused || status.paused) return "paused";
  const resting = (status.teacher && status.teacher.resting) || (teacher && teacher.resting);
  if (resting) return "resting";
  return now - progress.movedAt < IDLE_AFTER_S * 1000 ? "training" : "idle";
}

export function renderLearner(learner, teacher, state) {
  const status = (learner && learner.status) || {};
  const mark = document.getElementById("learner-badge");
  mark.textContent = state;
  mark.className = `badge state-${state}`;
  const resting = (status.teacher && status.teacher.resting) || (teacher && teacher.resting);
  facts("learner-facts", [
    ["state", badge(state, `state-${state}`)],
    ["step", int(status.step)],
    ["tokens/s", num(status.tokens_per_second, 1)],
    ["last loss", num(status.last_loss, 4)],
    ["examples seen", int(status.examples_seen)],
    ["train examples", int(status.train_examples)],
    ["last version", status.last_version ? `${versionName(status.last_version)} (${status.last_verdict || "?"})` : "–"],
    ["focus", (status.teacher && status.teacher.focus) || "–"],
    ["resting because", resting || "–"],
    ["lease holder", learner && learner.holder ? learner.holder : "none"],
    ["heartbeat", learner && isNum(learner.heartbeat_age_seconds) ? `${learner.heartbeat_age_seconds.toFixed(1)} s ago` : "–"],
    ["device", status.device || "–"],
  ]);
}

// --- buckets ----------------------------------------------------------------------------

function shareBar(share) {
  const width = isNum(share) ? `${Math.round(100 * share)}%` : "0";
  return el("div", { className: "share" },
    el("div", { className: "share-bar" }, el("div", { className: "share-fill", style: { width } })),
    el("span", { text: pct(share, 0) }));
}

function bucketName(name, colors) {
  return el("span", { className: "bucket-name" },
    el("span", { className: "swatch", style: { backgroundColor: colors.get(name) || "#999" } }),
    name);
}

/** Why the teacher treats a bucket specially (quarantined, stalled, current focus). */
function teacherNotes(name, teacher) {
  const notes = [];
  if (!teacher) return notes;
  const quarantined = teacher.quarantined && teacher.quarantined[name];
  if (quarantined) notes.push(el("div", {}, badge("quarantined", "bad"), " ", quarantined));
  const stalled = teacher.stalled && teacher.stalled[name];
  if (stalled) notes.push(el("div", {}, badge("stalled", "warn"), " ", stalled));
  if (teacher.current_round && teacher.current_round.bucket === name) {
    notes.push(el("div", {}, badge("focus", "good")));
  }
  return notes;
}

function bucketRow(b, teacher, colors) {
  const accuracy = isNum(b.probe_accuracy)
    ? `${pct(b.probe_accuracy)}${isNum(b.probe_accuracy_step) ? ` @${b.probe_accuracy_step}` : ""}`
    : "–";
  return row([
    bucketName(b.name, colors),
    b.kind,
    b.status,
    { text: int(b.train_examples), className: "num" },
    { text: int(b.probe_examples), className: "num" },
    { text: accuracy, className: "num" },
    { text: num(b.difficulty), className: "num", title: `${b.difficulty_items} fitted examples` },
    { text: pct(b.predicted_accuracy), className: "num" },
    shareBar(b.teacher && b.teacher.focus_share),
    { text: num(b.teacher && b.teacher.score, 3), className: "num" },
    el("div", {}, teacherNotes(b.name, teacher)),
  ]);
}

export function renderBuckets(buckets, teacher, colors) {
  fillBody("buckets-table", (buckets || []).map((b) => bucketRow(b, teacher, colors)),
    "No buckets yet: submit tasks with POST /v1/tasks (or lifelong submit).");
}

/**
 * Probe accuracy over training steps, per bucket: each evaluated model of the accuracy
 * matrix at its training step (the base model at step 0), and each finished teacher
 * round's focus accuracy at the step it ended. A matrix point wins over a round at the
 * same step (it covers every probe the model answered).
 */
export function accuracySeries(evaluations, teacher) {
  const byBucket = new Map();
  const put = (bucket, x, y, label) => {
    if (!bucket || !isNum(x) || !isNum(y)) return;
    if (!byBucket.has(bucket)) byBucket.set(bucket, new Map());
    byBucket.get(bucket).set(x, { x, y, label });
  };
  for (const d of (teacher && teacher.decisions) || []) {
    const end = d.step + (d.steps || 0);
    put(d.bucket, end, d.accuracy, `${d.bucket}: ${pct(d.accuracy)} after the round ending at step ${end}`);
  }
  for (const v of (evaluations && evaluations.versions) || []) {
    const step = v.version === null ? 0 : v.train_step;
    for (const [bucket, acc] of Object.entries(v.accuracy || {})) {
      put(bucket, step, acc, `${bucket}: ${pct(acc)} (${versionName(v.version)}, step ${step})`);
    }
  }
  return [...byBucket.entries()].sort(([a], [b]) => a.localeCompare(b))
    .map(([name, points]) => ({ name, points: [...points.values()] }));
}

export function renderAccuracyPlot(evaluations, teacher, colors) {
  const series = accuracySeries(evaluations, teacher)
    .map((s) => ({ ...s, color: colors.get(s.name) || "#999" }));
  fill("accuracy-plot", linePlot(series, "No probe evaluations yet."));
}

// --- teacher ----------------------------------------------------------------------------

function namedList(reasons) {
  const entries = Object.entries(reasons || {});
  if (!entries.length) return "none";
  return el("ul", { className: "plain" }, entries.map(([name, why]) =>
    el("li", {}, el("strong", { text: name }), `: ${why}`)));
}

function currentRound(round) {
  if (!round || !round.bucket) return "–";
  const parts = [round.bucket];
  if (isNum(round.start_step)) parts.push(`from step ${round.start_step}`);
  if (isNum(round.steps)) parts.push(`${round.steps} steps so far`);
  return parts.join(", ");
}

export function renderTeacherFacts(teacher) {
  const t = teacher || {};
  const ability = isNum(t.learner_ability)
    ? `${num(t.learner_ability)}${isNum(t.learner_ability_se) ? ` ± ${num(t.learner_ability_se)}` : ""}`
    : "–";
  const members = t.ensemble && Array.isArray(t.ensemble.members) ? t.ensemble.members.length : null;
  facts("teacher-facts", [
    ["policy", t.policy || "–"],
    ["snapshot", isNum(t.step) ? `step ${t.step}, ${when(t.updated_at)}` : "–"],
    ["current round", currentRound(t.current_round)],
    ["learner ability θ", ability],
    ["resting", t.resting || "no"],
    ["quarantined", namedList(t.quarantined)],
    ["stalled", namedList(t.stalled)],
    ["ensemble", members === null ? "–" : `${members} scorer(s)`],
  ]);
}

/** The arm scores of one decision, best first, the chosen bucket marked. */
function scoreList(scores, chosen) {
  const entries = Object.entries(scores || {}).sort(([, a], [, b]) => b - a);
  return el("span", { className: "scores" }, entries.map(([name, score]) =>
    el("span", { className: name === chosen ? "chosen" : "", text: `${name} ${num(score, 3)}` })));
}

function decisionRow(d) {
  return row([
    { text: int(d.step), className: "num" },
    { className: "nowrap", node: d.bucket === null ? el("em", { text: "(deleted)" }) : el("strong", { text: d.bucket }) },
    { text: d.reason, className: "reason" },
    { text: int(d.steps), className: "num" },
    { text: pct(d.accuracy), className: "num" },
    { text: num(d.loss, 4), className: "num" },
    { text: num(d.reward, 4), className: "num" },
    scoreList(d.scores, d.bucket),
    { text: when(d.created_at), className: "nowrap" },
  ], "decision");
}

export function renderDecisions(teacher) {
  fillBody("decisions-table", ((teacher && teacher.decisions) || []).map(decisionRow),
    "The teacher has made no decision yet.");
}
