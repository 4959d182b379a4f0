"""The adapter registry: saved versions on disk, their rows, and the active-version log.

A version directory is written atomically (temporary directory, fsync, rename) and never
changed afterwards; its ``provenance.json`` and the row record the base model, the LoRA and
learner configs, the parent version and the train step. The active version is not a
mutable pointer but the newest entry of the append-only ``registry_events`` log.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from learner.store.models import AdapterVersion, RegistryEvent

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def next_version(conn: Connection) -> int:
    return (
        int(conn.execute(select(func.coalesce(func.max(AdapterVersion.version), 0))).scalar_one())
        + 1
    )


def record_version(
    conn: Connection,
    version: int,
    path: Path,
    provenance: dict[str, Any],
    metrics: dict[str, Any],
) -> None:
    conn.execute(
        insert(AdapterVersion).values(
            version=version,
            parent_version=provenance.get("parent_version"),
            base_model=str(provenance["base_model"]),
            path=str(path),
            sha256=sha256_file(path / ADAPTER_WEIGHTS),
            train_step=int(provenance["train_step"]),
            status="candidate",
            provenance=provenance,
            metrics=metrics,
        )
    )


def get_version(conn: Connection, version: int) -> AdapterVersion | None:
    row = conn.execute(
        select(AdapterVersion.__table__).where(AdapterVersion.version == version)
    ).first()
    return AdapterVersion(**row._mapping) if row else None


def list_versions(conn: Connection) -> list[AdapterVersion]:
    rows = conn.execute(select(AdapterVersion.__table__).order_by(AdapterVersion.version))
    return [AdapterVersion(**row._mapping) for row in rows]


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


def log_event(
    conn: Connection, action: str, actor: str, to_version: int | None, reason: str
) -> None:
    """Append a change of the active version; the caller's transaction makes it atomic."""
    conn.execute(
        insert(RegistryEvent).values(
            action=action,
            actor=actor,
            from_version=active_version(conn),
            to_version=to_version,
            reason=reason,
        )
    )


def promote(conn: Connection, version: int, actor: str, reason: str, force: bool = False) -> None:
    """Make ``version`` active; the previously active one stays promoted in the history."""
    set_status(conn, version, "promoted")
    log_event(conn, "force" if force else "promote", actor, version, reason)


def history(conn: Connection) -> list[RegistryEvent]:
    rows = conn.execute(select(RegistryEvent.__table__).order_by(RegistryEvent.id))
    return [RegistryEvent(**row._mapping) for row in rows]


def write_provenance(path: Path, provenance: dict[str, Any]) -> None:
    (path / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True))


def read_provenance(path: Path) -> dict[str, Any]:
    return json.loads((path / "provenance.json").read_text())
