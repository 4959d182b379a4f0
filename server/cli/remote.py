"""Read commands that talk to a running server: ``buckets``, ``teacher``, ``eval``,
``status``."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer

from server.cli.client import ApiClient, Target
from server.cli.options import Server, client_command
from server.cli.render import MISSING, num, pct, say, show, table, text, when

# A status check is what a script or probe polls: it should give up sooner than the rest.
QUICK = Server(timeout=10.0)

# --- buckets -----------------------------------------------------------------------------


@client_command
def buckets(server: Server) -> None:
    """List the buckets: train and probe examples, latest probe accuracy (Acc), IRT
    difficulty (Diff), and how the teacher treats each: its share of focus rounds, its
    score, and whether it is the current focus, quarantined or stalled."""
    with server.connect() as client:
        rows = client.get("/v1/buckets")
        teacher = client.get("/v1/teacher", decisions=0)
    empty = "no buckets yet; submit examples with `lifelong submit FILE`"
    server.output(rows, lambda found: _buckets_table(found, teacher), empty)


def _buckets_table(rows: list[dict[str, Any]], teacher: dict[str, Any]) -> None:
    # Kind, grader and the probe step are in --json: these columns fit 80 characters.
    columns = ["Bucket", "Train>", "Probe>", "Acc>", "Diff>", "Share>", "Score>", "State"]
    show(table(None, columns, [_bucket_row(b, teacher) for b in rows]))


def _bucket_row(bucket: dict[str, Any], teacher: dict[str, Any]) -> list[Any]:
    stats = bucket.get("teacher") or {}
    return [
        text(bucket["name"], style="bold" if bucket.get("status") == "active" else "dim"),
        bucket["train_examples"],
        bucket["probe_examples"],
        pct(bucket.get("probe_accuracy")),
        num(bucket.get("difficulty")),
        pct(stats.get("focus_share")),
        num(stats.get("score"), 3),
        _teacher_state(bucket["name"], teacher),
    ]


def _teacher_state(name: str, teacher: dict[str, Any]) -> str:
    """focus, quarantined, stalled (or nothing): how the teacher treats the bucket now."""
    states = [
        ("focus", name == (teacher.get("current_round") or {}).get("bucket")),
        ("quarantined", name in (teacher.get("quarantined") or {})),
        ("stalled", name in (teacher.get("stalled") or {})),
    ]
    return ", ".join(label for label, on in states if on)


# --- teacher -----------------------------------------------------------------------------


@client_command
def teacher(
    decisions: Annotated[
        int, typer.Option("--decisions", "-n", min=0, max=1000, help="Decisions to list.")
    ] = 10,
    *,
    server: Server,
) -> None:
    """Show the teacher: its policy, every arm's score and state (quarantined, stalled,
    resting), and its recent decisions with their reasons and outcomes."""
    server.output(server.get("/v1/teacher", decisions=decisions), _show_teacher)


def _show_teacher(body: dict[str, Any]) -> None:
    say(_teacher_headline(body))
    if body.get("resting"):
        say(f"resting: {body['resting']}", style="yellow")
    show(_arms_table(body))
    rows = [_decision_row(d) for d in body.get("decisions") or []]
    if rows:
        columns = ["Step>", "Bucket", "Steps>", "Accuracy>", "Reward>", "Reason"]
        show(table("Recent decisions (newest first)", columns, rows))


def _teacher_headline(body: dict[str, Any]) -> str:
    ability = body.get("learner_ability")
    se = body.get("learner_ability_se")
    ability_text = MISSING if ability is None else f"{ability:.2f}"
    if ability is not None and se is not None:
        ability_text += f" ± {se:.2f}"
    return (
        f"policy {body.get('policy') or MISSING}, step {num(body.get('step'))} "
        f"(updated {when(body.get('updated_at'))} UTC)\nlearner ability {ability_text}"
    )


def _arms_table(body: dict[str, Any]) -> Any:
    scores: dict[str, float] = body.get("arm_scores") or {}
    quarantined: dict[str, str] = body.get("quarantined") or {}
    stalled: dict[str, str] = body.get("stalled") or {}
    difficulty: dict[str, float] = body.get("bucket_difficulty") or {}
    current = (body.get("current_round") or {}).get("bucket")
    rows = []
    for arm in sorted(set(scores) | set(quarantined) | set(stalled)):
        state = "focus" if arm == current else ""
        if arm in quarantined:
            state = f"quarantined: {quarantined[arm]}"
        elif arm in stalled:
            state = f"stalled: {stalled[arm]}"
        rows.append([arm, num(scores.get(arm), 3), num(difficulty.get(arm)), state])
    return table("Arms", ["Bucket", "Score>", "Difficulty>", "State"], rows)


def _decision_row(decision: dict[str, Any]) -> list[Any]:
    return [
        decision["step"],
        text(decision.get("bucket") or "(deleted)"),
        num(decision.get("steps")),
        pct(decision.get("accuracy")),
        num(decision.get("reward"), 3, signed=True),
        text(decision.get("reason")),
    ]


# --- eval --------------------------------------------------------------------------------


@client_command
def evaluations(server: Server) -> None:
    """Show the accuracy matrix: probe accuracy of every evaluated version (rows) on every
    bucket (columns), with each version's average accuracy, backward transfer (BWT),
    forgetting and negative flip rate (NFR) against the active version."""
    server.output(server.get("/v1/evaluations"), _show_matrix)


def _show_matrix(body: dict[str, Any]) -> None:
    versions = body.get("versions") or []
    if not versions:
        say("nothing evaluated yet: the learner evaluates each candidate it saves")
        return
    names: list[str] = body.get("buckets") or []
    columns = ["Version", *(f"{n}>" for n in names), "Avg acc>", "BWT>", "Forgetting>", "NFR>"]
    show(
        table(
            "Accuracy matrix (probe accuracy)", columns, [_matrix_row(v, names) for v in versions]
        )
    )


def _matrix_row(row: dict[str, Any], buckets: list[str]) -> list[Any]:
    accuracy: dict[str, float] = row.get("accuracy") or {}
    nfr = row.get("negative_flip_rate")
    label = row.get("model") or MISSING
    if row.get("version") is not None:
        label = f"v{row['version']} ({row.get('status', '?')})"
    return [
        text(
            label + (" *" if row.get("active") else ""), style="bold" if row.get("active") else ""
        ),
        *(pct(accuracy.get(b)) for b in buckets),
        pct(row.get("average_accuracy")),
        num(row.get("backward_transfer"), 3, signed=True),
        num(row.get("forgetting"), 3),
        MISSING if not nfr else f"{pct(nfr['rate'])} ({nfr['lost']}/{nfr['probes']})",
    ]


# --- status ------------------------------------------------------------------------------


@client_command
def status(server: Server = QUICK) -> None:
    """Show whether the server is up and ready, the active version, and the learner's state
    (lease holder, liveness, step, throughput, last verdict). Exits with 1 when the server
    is not ready."""
    report: dict[str, Any] = {"url": server.url, **_probe_health(server.target)}
    if report["ready"]:
        with server.connect() as client:
            report["active"] = client.get("/v1/adapters/active")
            report["learner"] = client.get("/v1/learner")
    server.output(report, _show_status)
    if not report["ready"]:
        raise typer.Exit(1)


def _probe_health(target: Target) -> dict[str, Any]:
    """``/healthz`` and ``/readyz`` (no key needed)."""
    with ApiClient(target, authenticate=False) as client:
        health = client.request("GET", "/healthz")
        ready = client.request("GET", "/readyz")
    reason = None
    if ready.status_code != 200:
        reason = _json_field(ready, "reason") or f"HTTP {ready.status_code}"
    return {"healthy": health.status_code == 200, "ready": reason is None, "not_ready": reason}


def _json_field(response: httpx.Response, name: str) -> str | None:
    try:
        value = response.json().get(name)
    except (ValueError, AttributeError):
        return None
    return str(value) if value is not None else None


def _show_status(report: dict[str, Any]) -> None:
    ready = "ready" if report["ready"] else f"NOT READY ({report['not_ready']})"
    say(f"server {report['url']}: {'up' if report['healthy'] else 'DOWN'}, {ready}")
    if "active" in report:
        active = report["active"]
        say(f"serving: {active['model']}" + ("" if active["version"] else " (no adapter)"))
    learner = report.get("learner")
    if learner:
        show(table("Learner", ["", ""], _learner_rows(learner), header=False))


def _learner_rows(learner: dict[str, Any]) -> list[list[Any]]:
    if learner.get("holder") is None:
        return [["state", "no learner has run yet"]]
    state: dict[str, Any] = learner.get("status") or {}
    teacher: dict[str, Any] = state.get("teacher") or {}
    alive = "alive" if learner.get("alive") else "NOT ALIVE"
    activity = "resting" if teacher.get("resting") else "training"
    last = state.get("last_version")
    return [
        ["holder", text(learner["holder"])],
        ["heartbeat", f"{alive} ({num(learner.get('heartbeat_age_seconds'), 1)} s ago)"],
        ["state", "paused" if learner.get("paused") else activity],
        ["step", num(state.get("step"))],
        ["tokens/s", num(state.get("tokens_per_second"), 1)],
        ["last loss", num(state.get("last_loss"), 4)],
        ["last candidate", MISSING if last is None else f"v{last}"],
        ["last verdict", text(state.get("last_verdict"))],
        ["teacher policy", text(teacher.get("policy"))],
        ["teacher focus", text(teacher.get("focus"))],
        ["resting", text(teacher.get("resting"))],
    ]
