"""Retention: batched deletes of the rows that only grow (DESIGN section 13).

Each function deletes at most ``batch`` rows in the caller's transaction and returns how
many it deleted, so that a caller can prune in many short transactions: on SQLite a long
delete would hold the one write lock that ingestion needs. What each rule keeps:

- ``teacher_decisions``: rows whose last activity (a rest's renewal, else its creation) is
  newer than the cut-off, at most ``keep_rows`` of them, and always the newest row (the
  teacher's current decision, which a rest renews);
- ``probe_results`` and ``evaluations`` of ``retired`` versions (their files are gone, no
  gate can use them as a reference); the accuracy matrix of every kept version is derived
  from its own rows only, so it does not change;
- ``evaluations`` superseded by a newer cell of the same (version, bucket): bucket listings
  show the newest cell, the matrix is derived from ``probe_results``;
- processed ``control_commands`` older than the cut-off, except the newest pause/resume,
  which says whether the learner is paused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, literal, or_, select

from learner.store.models import (
    AdapterVersion,
    ControlCommand,
    Evaluation,
    ProbeResult,
    TeacherDecision as Decision,
)


def _delete_ids(conn: Connection, table: Any, ids: Any) -> int:
    """Delete the rows of ``table`` whose id the (limited) ``ids`` subquery selects."""
    chosen = [row[0] for row in conn.execute(ids)]
    if not chosen:
        return 0
    conn.execute(delete(table).where(table.id.in_(chosen)))
    return len(chosen)


def prune_decisions(conn: Connection, older_than: datetime, keep_rows: int, batch: int) -> int:
    """Teacher decisions (round outcomes included) past their retention, oldest first."""
    newest = conn.execute(select(func.max(Decision.id))).scalar()
    if newest is None:
        return 0
    # The id of the oldest row the row cap keeps (rows below it are over the cap).
    capped = conn.execute(
        select(Decision.id).order_by(Decision.id.desc()).offset(keep_rows - 1).limit(1)
    ).scalar()
    last_active = func.coalesce(Decision.renewed_at, Decision.created_at)
    expired = last_active < older_than
    stale = expired if capped is None else or_(expired, Decision.id < capped)
    ids = select(Decision.id).where(stale, Decision.id != newest).order_by(Decision.id).limit(batch)
    return _delete_ids(conn, Decision, ids)


def _retired_versions() -> Any:
    return select(AdapterVersion.version).where(AdapterVersion.status == "retired")


def prune_retired_probe_results(conn: Connection, batch: int) -> int:
    """Per-probe answers of retired versions."""
    ids = (
        select(ProbeResult.id)
        .where(ProbeResult.adapter_version.in_(_retired_versions()))
        .order_by(ProbeResult.id)
        .limit(batch)
    )
    return _delete_ids(conn, ProbeResult, ids)


def prune_evaluations(conn: Connection, batch: int) -> int:
    """Accuracy-matrix cells of retired versions, and cells a newer one superseded."""
    # -1 stands for the base model (NULL), which GROUP BY would keep apart anyway but an
    # IN comparison would not match.
    version = func.coalesce(Evaluation.adapter_version, literal(-1))
    newest = select(func.max(Evaluation.id)).group_by(Evaluation.bucket_id, version)
    ids = (
        select(Evaluation.id)
        .where(
            or_(
                Evaluation.adapter_version.in_(_retired_versions()),
                Evaluation.id.not_in(newest),
            )
        )
        .order_by(Evaluation.id)
        .limit(batch)
    )
    return _delete_ids(conn, Evaluation, ids)


def prune_commands(conn: Connection, older_than: datetime, batch: int) -> int:
    """Processed control commands past their retention (never the newest pause/resume)."""
    newest_switch = conn.execute(
        select(func.max(ControlCommand.id)).where(ControlCommand.command.in_(("pause", "resume")))
    ).scalar()
    processed = and_(
        ControlCommand.processed_at.is_not(None), ControlCommand.created_at < older_than
    )
    if newest_switch is not None:
        processed = and_(processed, ControlCommand.id != newest_switch)
    ids = select(ControlCommand.id).where(processed).order_by(ControlCommand.id).limit(batch)
    return _delete_ids(conn, ControlCommand, ids)
