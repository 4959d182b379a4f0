"""``lifelong adapters``: the versions, their gate reports, and the admin actions that
change the served one (promote, rollback), over the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from server.cli.options import Server, client_command
from server.cli.render import (
    MISSING,
    num,
    pct,
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
@client_command
def list_versions(server: Server) -> None:
    """List every version with its parent, status, training step and gate verdict; the
    served one is marked with *."""
    empty = "no adapter versions yet: the base model is served"
    server.output(server.get("/v1/adapters"), _versions_table, empty)


def _versions_table(rows: list[dict[str, Any]]) -> None:
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
@client_command
def show_version(
    version: Annotated[int, typer.Argument(min=1, help="The version number (3 for v3).")],
    server: Server,
) -> None:
    """Show one version: provenance, its gate report check by check, and its accuracy on
    each bucket."""
    server.output(server.get(f"/v1/adapters/{version}"), _show_details)


def _show_details(row: dict[str, Any]) -> None:
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
@client_command
def promote(
    version: Annotated[int, typer.Argument(min=1, help="The version to serve.")],
    force: Annotated[
        bool, typer.Option("--force", help="Promote even a version the gate rejected (logged).")
    ] = False,
    reason: Reason = None,
    *,
    server: Server,
) -> None:
    """Make VERSION the served version (needs an admin key)."""
    body = _with_reason({"force": force}, reason)
    server.output(server.post(f"/v1/adapters/{version}/promote", body), _say_event)


@app.command("rollback")
@client_command
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
    *,
    server: Server,
) -> None:
    """Serve an earlier version again (needs an admin key). Repeated rollbacks walk further
    back through the history."""
    body = _with_reason({} if to is None else {"to": to}, reason)
    server.output(server.post("/v1/adapters/rollback", body), _say_event)


def _with_reason(body: dict[str, Any], reason: str | None) -> dict[str, Any]:
    # Left out when not given: the server then records who did it.
    return body if reason is None else {**body, "reason": reason}


def _say_event(event: dict[str, Any]) -> None:
    say(
        f"{event['action']}: {version_name(event['from_version'])} -> "
        f"{version_name(event['to_version'])} by {event['actor']}: {event['reason']}"
    )


@app.command("history")
@client_command
def history(server: Server) -> None:
    """List every change of the served version (promotions, forced promotions, rollbacks,
    learner resets), oldest first, with who made it and why."""
    empty = "no registry events yet: the base model has always been served"
    server.output(server.get("/v1/adapters/history"), _history_table, empty)


def _history_table(events: list[dict[str, Any]]) -> None:
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
