"""``lifelong adapters``: the versions, their gate reports, and the admin actions that
change the served one (promote, rollback), over the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from server.cli.options import (
    DEFAULT_DATA_DIR,
    DEFAULT_URL,
    Json,
    KeyDir,
    Timeout,
    Url,
    connect,
    reports_errors,
)
from server.cli.render import (
    MISSING,
    num,
    pct,
    print_json,
    say,
    show,
    table,
    text,
    version_name,
    when,
)

app = typer.Typer(
    help="Adapter versions: list, show, promote, rollback, history.", no_args_is_help=True
)
Reason = Annotated[
    str | None,
    typer.Option("--reason", "-r", help="Why; recorded in the history (default: who did it)."),
]


@app.command("list")
@reports_errors
def list_versions(
    url: Url = DEFAULT_URL,
    data_dir: KeyDir = DEFAULT_DATA_DIR,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """List every version with its parent, status, training step and gate verdict; the
    served one is marked with *."""
    with connect(url, data_dir, timeout) as client:
        rows = client.get("/v1/adapters")
    if as_json:
        print_json(rows)
        return
    if not rows:
        say("no adapter versions yet: the base model is served")
        return
    columns = ["Version", "Parent", "Status", "Step>", "Created (UTC)", "Avg acc>", "Gate"]
    show(table(None, columns, [_version_row(r) for r in rows]))


def _version_row(row: dict[str, Any]) -> list[Any]:
    evaluation = row.get("evaluation") or {}
    return [
        text(
            f"v{row['version']}" + (" *" if row["active"] else ""), "bold" if row["active"] else ""
        ),
        version_name(row.get("parent_version")),
        row["status"],
        row["train_step"],
        when(row.get("created_at")),
        pct(evaluation.get("average_accuracy")),
        text(_gate_summary(row.get("gate_report"))),
    ]


def _gate_summary(report: dict[str, Any] | None) -> str:
    if not report:
        return "not gated yet"
    summary = report.get("summary") or ""
    verdict = report.get("verdict") or "?"
    return summary if summary.startswith(verdict) else f"{verdict}: {summary}"


@app.command("show")
@reports_errors
def show_version(
    version: Annotated[int, typer.Argument(min=1, help="The version number (3 for v3).")],
    url: Url = DEFAULT_URL,
    data_dir: KeyDir = DEFAULT_DATA_DIR,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Show one version: provenance, its gate report check by check, and its accuracy on
    each bucket."""
    with connect(url, data_dir, timeout) as client:
        row = client.get(f"/v1/adapters/{version}")
    if as_json:
        print_json(row)
        return
    show(table(f"Adapter v{row['version']}", ["", ""], _detail_rows(row), header=False))
    report = row.get("gate_report") or {}
    checks = report.get("checks") or []
    if checks:
        show(
            table(
                "Gate checks",
                ["Check", "Result", "Value>", "Threshold>", "Why"],
                map(_check_row, checks),
            )
        )
    evaluation = row.get("evaluation") or {}
    accuracy: dict[str, float] = evaluation.get("accuracy") or {}
    if accuracy:
        probes: dict[str, int] = evaluation.get("probes") or {}
        rows = [[b, pct(a), probes.get(b, MISSING)] for b, a in accuracy.items()]
        show(table("Probe accuracy", ["Bucket", "Accuracy>", "Probes>"], rows))


def _detail_rows(row: dict[str, Any]) -> list[list[Any]]:
    evaluation = row.get("evaluation") or {}
    return [
        ["status", row["status"] + (" (active)" if row["active"] else "")],
        ["parent", version_name(row.get("parent_version"))],
        ["base model", text(row["base_model"])],
        ["train step", row["train_step"]],
        ["created (UTC)", when(row.get("created_at"))],
        ["sha256", row.get("sha256") or MISSING],
        ["path", text(row.get("path"))],
        ["gate", text(_gate_summary(row.get("gate_report")))],
        ["average accuracy", pct(evaluation.get("average_accuracy"))],
        ["backward transfer", num(evaluation.get("backward_transfer"), 3, signed=True)],
        ["forgetting", num(evaluation.get("forgetting"), 3)],
    ]


def _check_row(check: dict[str, Any]) -> list[Any]:
    passed = bool(check.get("passed"))
    return [
        text(f"{check.get('kind', '?')}: {check.get('name', '?')}"),
        text("pass" if passed else "FAIL", "green" if passed else "red"),
        num(check.get("value"), 3),
        num(check.get("threshold"), 3),
        text(check.get("message")),
    ]


@app.command("promote")
@reports_errors
def promote(
    version: Annotated[int, typer.Argument(min=1, help="The version to serve.")],
    force: Annotated[
        bool, typer.Option("--force", help="Promote even a version the gate rejected (logged).")
    ] = False,
    reason: Reason = None,
    url: Url = DEFAULT_URL,
    data_dir: KeyDir = DEFAULT_DATA_DIR,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Make VERSION the served version (needs an admin key)."""
    body: dict[str, Any] = {"force": force}
    if reason is not None:
        body["reason"] = reason
    with connect(url, data_dir, timeout) as client:
        event = client.post(f"/v1/adapters/{version}/promote", body)
    _show_event(event, as_json)


@app.command("rollback")
@reports_errors
def rollback(
    to: Annotated[
        int | None,
        typer.Option(
            "--to",
            min=0,
            help="The version to serve again (0: the base model); default: the "
            "one active before the current one.",
        ),
    ] = None,
    reason: Reason = None,
    url: Url = DEFAULT_URL,
    data_dir: KeyDir = DEFAULT_DATA_DIR,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Serve an earlier version again (needs an admin key). Repeated rollbacks walk further
    back through the history."""
    body: dict[str, Any] = {}
    if to is not None:
        body["to"] = to
    if reason is not None:
        body["reason"] = reason
    with connect(url, data_dir, timeout) as client:
        event = client.post("/v1/adapters/rollback", body)
    _show_event(event, as_json)


def _show_event(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(event)
        return
    say(
        f"{event['action']}: {version_name(event['from_version'])} -> "
        f"{version_name(event['to_version'])} by {event['actor']}: {event['reason']}"
    )


@app.command("history")
@reports_errors
def history(
    url: Url = DEFAULT_URL,
    data_dir: KeyDir = DEFAULT_DATA_DIR,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """List every change of the served version (promotions, forced promotions, rollbacks,
    learner resets), oldest first, with who made it and why."""
    with connect(url, data_dir, timeout) as client:
        events = client.get("/v1/adapters/history")
    if as_json:
        print_json(events)
        return
    if not events:
        say("no registry events yet: the base model has always been served")
        return
    rows = [
        [
            e["id"],
            when(e.get("created_at")),
            e["action"],
            text(e["actor"]),
            f"{version_name(e['from_version'])} -> {version_name(e['to_version'])}",
            text(e["reason"]),
        ]
        for e in events
    ]
    show(table(None, ["Id>", "Time (UTC)", "Action", "Actor", "Change", "Reason"], rows))
