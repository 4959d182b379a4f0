"""Teacher records: one decision row per round or rest period, and snapshots of the
teacher's state.

Callers own the transactions. ``GET /v1/teacher`` and ``GET /v1/buckets`` read these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from learner.store.models import Bucket, TeacherDecision, TeacherState


@dataclass(frozen=True)
class DecisionRecord:
    """A finished round: the choice, every arm's score, the reason and the outcome."""

    step: int
    bucket_id: int | None
    policy: str
    scores: dict[str, float]
    reason: str
    steps: int
    accuracy: float | None
    loss: float | None
    reward: float | None


def record_decision(conn: Connection, record: DecisionRecord) -> None:
    # The record's fields are the table's columns, one for one.
    conn.execute(insert(TeacherDecision).values(**asdict(record)))


def renew_rest(conn: Connection, record: DecisionRecord) -> bool:
    """The teacher rests on: renew the newest decision row when it is a rest (its scores,
    reason and ``renewed_at``), so an idle service writes one row per rest period.
    Returns False, and writes nothing, when the newest row is a round (then record a
    new rest)."""
    newest = select(func.max(TeacherDecision.id)).scalar_subquery()
    done = conn.execute(
        update(TeacherDecision)
        .where(TeacherDecision.id == newest, TeacherDecision.bucket_id.is_(None))
        .where(TeacherDecision.steps == 0)
        .values(scores=record.scores, reason=record.reason, renewed_at=func.now())
    )
    return done.rowcount == 1


def save_snapshot(
    conn: Connection, step: int, policy: str, state: dict[str, Any], keep: int
) -> None:
    """Store a snapshot and drop all but the newest ``keep``."""
    conn.execute(insert(TeacherState).values(step=step, policy=policy, state=state))
    newest = select(TeacherState.id).order_by(TeacherState.id.desc()).limit(keep)
    conn.execute(delete(TeacherState).where(TeacherState.id.not_in(newest.scalar_subquery())))


@dataclass(frozen=True)
class Snapshot:
    """The newest stored teacher state."""

    step: int
    policy: str
    state: dict[str, Any]
    created_at: datetime


def latest_snapshot(conn: Connection) -> Snapshot | None:
    row = conn.execute(
        select(TeacherState.step, TeacherState.policy, TeacherState.state, TeacherState.created_at)
        .order_by(TeacherState.id.desc())
        .limit(1)
    ).first()
    return None if row is None else Snapshot(row.step, row.policy, row.state, row.created_at)


@dataclass(frozen=True)
class StoredDecision:
    """A decision row with its bucket's name (None if the bucket is gone)."""

    step: int
    bucket: str | None
    policy: str | None
    scores: dict[str, float]
    reason: str
    steps: int | None
    accuracy: float | None
    loss: float | None
    reward: float | None
    created_at: datetime
    renewed_at: datetime | None


def recent_decisions(conn: Connection, limit: int) -> list[StoredDecision]:
    """The newest ``limit`` decisions, newest first."""
    d = TeacherDecision
    rows = conn.execute(
        select(d.step, Bucket.name, d.policy, d.scores, d.reason, d.steps, d.accuracy)
        .add_columns(d.loss, d.reward, d.created_at, d.renewed_at)
        .outerjoin(Bucket, Bucket.id == d.bucket_id)
        .order_by(d.id.desc())
        .limit(limit)
    )
    return [StoredDecision(*row) for row in rows]


def focus_rounds(conn: Connection) -> dict[int, int]:
    """Bucket id -> number of rounds it was the focus."""
    rows = conn.execute(
        select(TeacherDecision.bucket_id, func.count())
        .where(TeacherDecision.bucket_id.is_not(None))
        .group_by(TeacherDecision.bucket_id)
    )
    return {int(bucket_id): int(n) for bucket_id, n in rows if bucket_id is not None}


@dataclass(frozen=True)
class TeacherView:
    """What bucket listings show of the teacher: ability, newest scores, rounds per bucket."""

    ability: float | None
    arm_scores: dict[str, float]
    focus_rounds: dict[int, int]


def teacher_view(conn: Connection) -> TeacherView:
    snapshot = latest_snapshot(conn)
    newest = recent_decisions(conn, 1)
    return TeacherView(
        ability=None if snapshot is None else snapshot.state.get("learner_ability"),
        arm_scores=newest[0].scores if newest else {},
        focus_rounds=focus_rounds(conn),
    )
