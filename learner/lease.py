"""The training lease: exactly one learner trains; a second one waits for the lease.

The lease is a row with a heartbeat. A holder renews it every few seconds; a lease whose
heartbeat is older than ``ttl`` seconds is considered abandoned (its holder died) and can
be taken over. The take-over is a conditional UPDATE, so two waiting learners cannot both
win it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from learner.store.db import write_transaction
from learner.store.models import LearnerLease

LEASE_NAME = "trainer"


def _now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything here is stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def try_acquire(engine: Engine, holder: str, ttl: float, name: str = LEASE_NAME) -> bool:
    """Take the lease if it is free, expired or already ours; True when we hold it."""
    now = _now()
    try:
        with write_transaction(engine) as conn:
            row = conn.execute(
                select(LearnerLease.__table__).where(LearnerLease.name == name)
            ).first()
            if row is None:
                conn.execute(
                    insert(LearnerLease).values(
                        name=name, holder=holder, acquired_at=now, heartbeat_at=now, state={}
                    )
                )
                return True
            if row.holder != holder and as_utc(row.heartbeat_at) > now - timedelta(seconds=ttl):
                return False
            result = conn.execute(
                update(LearnerLease)
                .where(LearnerLease.name == name, LearnerLease.heartbeat_at == row.heartbeat_at)
                .values(holder=holder, acquired_at=now, heartbeat_at=now, state={})
            )
            return result.rowcount == 1
    except IntegrityError:
        return False  # another learner inserted the row first


def heartbeat(
    engine: Engine, holder: str, state: dict[str, Any] | None = None, name: str = LEASE_NAME
) -> bool:
    """Renew the lease; False means we lost it (another learner took over) and must stop."""
    values: dict[str, Any] = {"heartbeat_at": _now()}
    if state is not None:
        values["state"] = state
    with write_transaction(engine) as conn:
        result = conn.execute(
            update(LearnerLease)
            .where(LearnerLease.name == name, LearnerLease.holder == holder)
            .values(values)
        )
        return result.rowcount == 1


def renew(
    conn: Connection,
    holder: str,
    state: dict[str, Any] | None = None,
    name: str = LEASE_NAME,
) -> bool:
    """Renew the lease (and its status ``state``) inside the caller's transaction; False
    when it is not ours.

    Writes that only the lease holder may make (versions, promotions) run in the same
    transaction, so a learner that lost the lease cannot make them (fencing).
    """
    values: dict[str, Any] = {"heartbeat_at": _now()}
    if state is not None:
        values["state"] = state
    result = conn.execute(
        update(LearnerLease)
        .where(LearnerLease.name == name, LearnerLease.holder == holder)
        .values(values)
    )
    return result.rowcount == 1


def release(engine: Engine, holder: str, name: str = LEASE_NAME) -> None:
    """Give the lease up at once by back-dating the heartbeat."""
    with write_transaction(engine) as conn:
        conn.execute(
            update(LearnerLease)
            .where(LearnerLease.name == name, LearnerLease.holder == holder)
            .values(heartbeat_at=datetime(1970, 1, 1, tzinfo=UTC))
        )


def read_lease(conn: Connection, name: str = LEASE_NAME) -> LearnerLease | None:
    row = conn.execute(select(LearnerLease.__table__).where(LearnerLease.name == name)).first()
    return LearnerLease(**row._mapping) if row else None
