"""Counts for the Prometheus collector (``server/observability/collector.py``): read-only
aggregates, each one statement, in the caller's connection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from learner.store.models import (
    AdapterVersion,
    Base,
    Bucket,
    Example,
    RegistryEvent,
    TeacherDecision,
)


def judged_versions(conn: Connection) -> list[int]:
    """Versions that have a gate report."""
    query = select(AdapterVersion.version).where(AdapterVersion.gate_report.is_not(None))
    return list(conn.execute(query).scalars())


def gate_reports(conn: Connection, versions: Sequence[int]) -> dict[int, Any]:
    """version -> gate report of these versions (the caller keeps the list short)."""
    query = select(AdapterVersion.version, AdapterVersion.gate_report)
    rows = conn.execute(query.where(AdapterVersion.version.in_(list(versions))))
    return {version: report for version, report in rows}


def examples_per_bucket(conn: Connection) -> list[tuple[str, int]]:
    """(bucket name, stored examples) of every bucket, 0 for an empty one, by name."""
    counts = (
        select(Example.bucket_id, func.count().label("n")).group_by(Example.bucket_id).subquery()
    )
    rows = conn.execute(
        select(Bucket.name, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.bucket_id == Bucket.id)
        .order_by(Bucket.name)
    )
    return [(name, int(n)) for name, n in rows]


def decisions_per_bucket(conn: Connection) -> list[tuple[str | None, int]]:
    """(focus bucket name, teacher decisions); None counts rests and deleted buckets."""
    d = TeacherDecision
    rows = conn.execute(
        select(Bucket.name, func.count())
        .select_from(d)
        .outerjoin(Bucket, Bucket.id == d.bucket_id)
        .group_by(Bucket.name)
    )
    return [(name, int(n)) for name, n in rows]


def registry_event_counts(conn: Connection) -> dict[str, int]:
    """Registry events per action."""
    query = select(RegistryEvent.action, func.count()).group_by(RegistryEvent.action)
    return {action: int(n) for action, n in conn.execute(query)}


def database_bytes(conn: Connection) -> int:
    """The database's size on disk: PostgreSQL's ``pg_database_size``, SQLite's pages
    (the write-ahead log beside the file is not counted)."""
    if conn.dialect.name == "postgresql":
        return int(
            conn.execute(select(func.pg_database_size(func.current_database()))).scalar_one()
        )
    pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
    size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
    return int(pages) * int(size)


def table_rows(conn: Connection) -> dict[str, int]:
    """Rows per table of the schema, by table name."""
    return {
        table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        for table in Base.metadata.sorted_tables
    }
