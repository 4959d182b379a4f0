"""The training lease: exactly one learner trains; a second one waits for the lease.

The lease is a row with a heartbeat. A holder renews it every few seconds; a lease whose
heartbeat is older than ``ttl`` seconds is considered abandoned (its holder died) and can
be taken over. The take-over is a conditional UPDATE, so two waiting learners cannot both
win it.

Every time here is the database's (:func:`db_now`), never a learner's own clock: learners
on other hosts may disagree about the time, and one whose clock ran ahead would otherwise
see a live lease as expired and take it over, or one whose clock lagged would write
heartbeats that look old to everyone else.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    Row,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.exc import IntegrityError

from learner.store.db import write_transaction
from learner.store.models import LearnerLease

LEASE_NAME = "trainer"
# SQLite has no clock type: SQLAlchemy stores a DateTime as this text (UTC here), so the
# current time is rendered the same way and compares with stored values as a string.
# strftime's %f is "SS.SSS"; the zeros pad it to SQLAlchemy's six fractional digits.
_SQLITE_FORMAT = "%Y-%m-%d %H:%M:%f000"


def db_now(conn: Connection, offset: float = 0.0) -> ColumnElement[datetime]:
    """The database's current time plus ``offset`` seconds, as a SQL expression.

    PostgreSQL: ``now()``, the start of the transaction, so every statement of one
    transaction sees the same time. SQLite: the current UTC time (one host, one clock).
    """
    if conn.dialect.name == "postgresql":
        now: ColumnElement[datetime] = type_coerce(func.now(), DateTime(timezone=True))
        return now + timedelta(seconds=offset) if offset else now
    modifiers = [f"{offset:+.6f} seconds"] if offset else []
    text_now = func.strftime(_SQLITE_FORMAT, "now", *modifiers)
    return type_coerce(text_now, DateTime(timezone=True))


def as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything here is stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def try_acquire(engine: Engine, holder: str, ttl: float, name: str = LEASE_NAME) -> bool:
    """Take the lease if it is free, expired or already ours; True when we hold it."""
    try:
        with write_transaction(engine) as conn:
            if _take_over(conn, holder, ttl, name):
                return True
            if _lease_row(conn, name) is not None:
                return False  # held by another learner whose heartbeat is recent
            now = db_now(conn)
            conn.execute(
                insert(LearnerLease).values(
                    name=name, holder=holder, acquired_at=now, heartbeat_at=now, state={}
                )
            )
            return True
    except IntegrityError:
        return False  # another learner inserted the row first


def _take_over(conn: Connection, holder: str, ttl: float, name: str) -> bool:
    """One conditional UPDATE: the row becomes ours if it is ours already or its heartbeat
    is at least ``ttl`` seconds old. On PostgreSQL a concurrent taker waits for the row
    lock and then re-checks the condition against the fresh heartbeat, so only one wins."""
    now = db_now(conn)
    expired = LearnerLease.heartbeat_at <= db_now(conn, -ttl)
    result = conn.execute(
        update(LearnerLease)
        .where(LearnerLease.name == name, or_(LearnerLease.holder == holder, expired))
        .values(holder=holder, acquired_at=now, heartbeat_at=now, state={})
    )
    return result.rowcount == 1


def heartbeat(
    engine: Engine, holder: str, state: dict[str, Any] | None = None, name: str = LEASE_NAME
) -> bool:
    """Renew the lease; False means we lost it (another learner took over) and must stop."""
    with write_transaction(engine) as conn:
        return renew(conn, holder, state, name)


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
    values: dict[str, Any] = {"heartbeat_at": db_now(conn)}
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
    row = _lease_row(conn, name)
    return LearnerLease(**row._mapping) if row else None


def heartbeat_age(conn: Connection, name: str = LEASE_NAME) -> float | None:
    """Seconds since the lease's last heartbeat by the database's clock; None: no lease.

    For status displays: the reader's own clock may disagree with the database's.
    """
    query = select(LearnerLease.heartbeat_at, db_now(conn).label("now"))
    row = conn.execute(query.where(LearnerLease.name == name)).first()
    if row is None:
        return None
    return (as_utc(row.now) - as_utc(row.heartbeat_at)).total_seconds()


def _lease_row(conn: Connection, name: str) -> Row[Any] | None:
    return conn.execute(select(LearnerLease.__table__).where(LearnerLease.name == name)).first()
