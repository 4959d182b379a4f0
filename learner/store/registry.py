"""The adapter registry's rows: ``adapter_versions`` and the append-only ``registry_events``
log (the active version is its newest entry). File handling and the steps that make a
version are in :mod:`learner.model.registry`; every function here runs in the caller's
transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from learner.store.models import AdapterVersion, RegistryEvent

#: Events that change the active version (a ``reset`` only records the learner's lineage).
ACTIVE_CHANGES = ("promote", "force", "rollback")


def next_version(conn: Connection) -> int:
    newest = conn.execute(select(func.coalesce(func.max(AdapterVersion.version), 0)))
    return int(newest.scalar_one()) + 1


def insert_version(conn: Connection, **values: Any) -> None:
    """One ``adapter_versions`` row (every column named)."""
    conn.execute(insert(AdapterVersion).values(**values))


def mark_complete(conn: Connection, version: int, sha256: str, provenance: dict[str, Any]) -> bool:
    """A pending version becomes a candidate with its weights' hash; False if it was not
    pending (already completed, or gone)."""
    done = conn.execute(
        update(AdapterVersion)
        .where(AdapterVersion.version == version, AdapterVersion.status == "pending")
        .values(sha256=sha256, provenance=provenance, status="candidate")
    )
    return bool(done.rowcount)


def get_version(conn: Connection, version: int) -> AdapterVersion | None:
    row = conn.execute(
        select(AdapterVersion.__table__).where(AdapterVersion.version == version)
    ).first()
    return AdapterVersion(**row._mapping) if row else None


def list_versions(conn: Connection) -> list[AdapterVersion]:
    rows = conn.execute(select(AdapterVersion.__table__).order_by(AdapterVersion.version))
    return [AdapterVersion(**row._mapping) for row in rows]


def parents(conn: Connection) -> dict[int, int | None]:
    """version -> parent version, for every version (lineages are followed through it)."""
    rows = conn.execute(select(AdapterVersion.version, AdapterVersion.parent_version))
    return {r.version: r.parent_version for r in rows}


def update_files(conn: Connection, version: int, sha256: str, provenance: dict[str, Any]) -> None:
    """A version's files were rewritten (a scaled candidate): their hash and provenance."""
    conn.execute(
        update(AdapterVersion)
        .where(AdapterVersion.version == version)
        .values(sha256=sha256, provenance=provenance)
    )


def add_provenance(conn: Connection, version: int, extra: dict[str, Any]) -> None:
    """Add entries to a version's recorded provenance (its files stay as they are)."""
    row = get_version(conn, version)
    if row is not None:
        provenance = {**(row.provenance or {}), **extra}
        conn.execute(
            update(AdapterVersion)
            .where(AdapterVersion.version == version)
            .values(provenance=provenance)
        )


def set_status(
    conn: Connection, version: int, status: str, gate_report: dict[str, Any] | None = None
) -> None:
    values: dict[str, Any] = {"status": status}
    if gate_report is not None:
        values["gate_report"] = gate_report
    conn.execute(update(AdapterVersion).where(AdapterVersion.version == version).values(values))


def active_version(conn: Connection) -> int | None:
    """The version the newest registry event made active (None: the base model)."""
    row = conn.execute(
        select(RegistryEvent.to_version).order_by(RegistryEvent.id.desc()).limit(1)
    ).first()
    return row.to_version if row else None


def last_event_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(RegistryEvent.id), 0))).scalar_one())


def insert_event(
    conn: Connection,
    action: str,
    actor: str,
    from_version: int | None,
    to_version: int | None,
    reason: str,
) -> None:
    conn.execute(
        insert(RegistryEvent).values(
            action=action,
            actor=actor,
            from_version=from_version,
            to_version=to_version,
            reason=reason,
        )
    )


def newest_event(conn: Connection) -> RegistryEvent | None:
    """The newest registry event (in a write transaction: the one just logged)."""
    row = conn.execute(
        select(RegistryEvent.__table__).order_by(RegistryEvent.id.desc()).limit(1)
    ).first()
    return RegistryEvent(**row._mapping) if row else None


def was_active(conn: Connection, version: int) -> bool:
    """Whether an event ever made ``version`` the active one."""
    row = conn.execute(
        select(RegistryEvent.id)
        .where(RegistryEvent.to_version == version, RegistryEvent.action.in_(ACTIVE_CHANGES))
        .limit(1)
    ).first()
    return row is not None


def history(conn: Connection) -> list[RegistryEvent]:
    rows = conn.execute(select(RegistryEvent.__table__).order_by(RegistryEvent.id))
    return [RegistryEvent(**row._mapping) for row in rows]


def events_since(conn: Connection, after_id: int) -> list[RegistryEvent]:
    rows = conn.execute(
        select(RegistryEvent.__table__)
        .where(RegistryEvent.id > after_id)
        .order_by(RegistryEvent.id)
    )
    return [RegistryEvent(**row._mapping) for row in rows]


def version_paths(
    conn: Connection, statuses: Sequence[str], newest_first: bool = False
) -> list[tuple[int, str]]:
    """(version, stored path) of the versions in these statuses, by version number."""
    order = AdapterVersion.version.desc() if newest_first else AdapterVersion.version
    rows = conn.execute(
        select(AdapterVersion.version, AdapterVersion.path)
        .where(AdapterVersion.status.in_(list(statuses)))
        .order_by(order)
    )
    return [(r.version, r.path) for r in rows]
