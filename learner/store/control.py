"""Control commands (pause, resume): rows the server writes and the learner polls."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from learner.store.models import ControlCommand

LEARNER_COMMANDS = ("pause", "resume")


def submit_command(
    conn: Connection, command: str, created_by: str, args: dict[str, Any] | None = None
) -> int:
    if command not in LEARNER_COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    return int(
        conn.execute(
            insert(ControlCommand)
            .values(command=command, args=args or {}, created_by=created_by)
            .returning(ControlCommand.id)
        ).scalar_one()
    )


def is_paused(conn: Connection) -> bool:
    """Paused when the newest pause/resume command is a pause (survives restarts)."""
    row = conn.execute(
        select(ControlCommand.command)
        .where(ControlCommand.command.in_(("pause", "resume")))
        .order_by(ControlCommand.id.desc())
        .limit(1)
    ).first()
    return row is not None and row.command == "pause"


def has_pending(conn: Connection) -> bool:
    row = conn.execute(
        select(ControlCommand.id).where(ControlCommand.processed_at.is_(None)).limit(1)
    ).first()
    return row is not None


def acknowledge_pending(conn: Connection, result: str) -> list[str]:
    """Mark unprocessed commands as processed; returns their names in order."""
    rows = conn.execute(
        select(ControlCommand.id, ControlCommand.command)
        .where(ControlCommand.processed_at.is_(None))
        .order_by(ControlCommand.id)
    ).all()
    if rows:
        conn.execute(
            update(ControlCommand)
            .where(ControlCommand.id.in_([r.id for r in rows]))
            .values(processed_at=datetime.now(UTC), result=result)
        )
    return [r.command for r in rows]
