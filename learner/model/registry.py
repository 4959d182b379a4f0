"""The adapter registry: saved versions on disk, their rows, and the active-version log.

A version is made in three moves, so a crash at any moment leaves nothing servable that
is not whole:

1. ``reserve_version`` inserts a ``pending`` row under the next number (in the learner's
   fenced transaction: one learner owns the numbers);
2. the files are written into ``adapters/v<N>`` atomically (temporary directory, fsync,
   rename), never over an existing directory;
3. ``complete_version`` stores the weights' sha256 and makes the row a ``candidate``.

Paths are stored relative to the data directory. The sha256 is checked before a version is
served or used as a reference (:func:`verify_version`). The active version is not a
mutable pointer but the newest entry of the append-only ``registry_events`` log.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from learner.fsutil import sha256_file as sha256_file
from learner.store.models import AdapterVersion, RegistryEvent
from learner.store.registry import (  # the rows, re-exported: callers use registry.<name>
    ACTIVE_CHANGES as ACTIVE_CHANGES,
    active_version as active_version,
    add_provenance as add_provenance,
    events_since as events_since,
    get_version as get_version,
    history as history,
    insert_event,
    insert_version,
    last_event_id as last_event_id,
    list_versions as list_versions,
    mark_complete,
    newest_event as newest_event,
    next_version,
    parents as parents,
    set_status as set_status,
    update_files as update_files,
    version_paths as version_paths,
    was_active as was_active,
)

log = logging.getLogger(__name__)
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTERS_DIR = "adapters"
#: Statuses whose files may be served or used as a reference.
SERVABLE = ("candidate", "promoted")


class VersionUnavailable(LookupError):
    """A version that cannot be served: missing, pending, retired, or failing its sha256."""


def version_relpath(version: int) -> str:
    return f"{ADAPTERS_DIR}/v{version:05d}"


def resolve_path(data_dir: Path, stored: str) -> Path:
    """A stored version path (relative to the data dir; older rows hold absolute ones)."""
    path = Path(stored)
    return path if path.is_absolute() else data_dir / path


def reserve_version(conn: Connection, parent: int | None, base_model: str, train_step: int) -> int:
    """Insert a ``pending`` row under the next version number and return the number."""
    version = next_version(conn)
    insert_version(
        conn,
        version=version,
        parent_version=parent,
        base_model=base_model,
        path=version_relpath(version),
        sha256="",
        train_step=train_step,
        status="pending",
        provenance={},
        metrics={},
    )
    return version


def complete_version(
    conn: Connection, version: int, sha256: str, provenance: dict[str, Any]
) -> None:
    """The files of a reserved version are in place: record their hash; now a candidate."""
    if mark_complete(conn, version, sha256, provenance):
        _log_candidate(version, provenance)


def _log_candidate(version: int, provenance: dict[str, Any]) -> None:
    parent = provenance.get("parent_version")
    log.info(
        "registry: candidate v%d registered (parent %s, step %s)",
        version,
        "base" if parent is None else f"v{parent}",
        provenance.get("train_step", "?"),
        extra={"event": "candidate", "version": version, "parent_version": parent},
    )


def record_version(
    conn: Connection,
    version: int,
    path: Path,
    provenance: dict[str, Any],
    metrics: dict[str, Any],
) -> None:
    """Record an already written version directory as a candidate in one step."""
    insert_version(
        conn,
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
    _log_candidate(version, provenance)


def log_event(
    conn: Connection, action: str, actor: str, to_version: int | None, reason: str
) -> None:
    """Append an event; the caller's transaction makes it atomic with what it records.

    Every event, from the API or the learner, is logged here once with its reason (the
    callers commit right after; a commit that fails is reported by them)."""
    from_version = active_version(conn)
    insert_event(conn, action, actor, from_version, to_version, reason)
    log.info(
        "registry: %s %s -> %s by %s: %s",
        action,
        _name(from_version),
        _name(to_version),
        actor,
        reason,
        extra={
            "event": action,
            "actor": actor,
            "from_version": from_version,
            "to_version": to_version,
            "reason": reason,
        },
    )


def _name(version: int | None) -> str:
    return "base" if version is None else f"v{version}"


def promote(conn: Connection, version: int, actor: str, reason: str, force: bool = False) -> None:
    """Make ``version`` active; the previously active one stays promoted in the history."""
    set_status(conn, version, "promoted")
    log_event(conn, "force" if force else "promote", actor, version, reason)


def rollback(conn: Connection, to_version: int | None, actor: str, reason: str) -> None:
    """Make an earlier version (None: the base model) active again."""
    log_event(conn, "rollback", actor, to_version, reason)


def log_reset(conn: Connection, actor: str, reason: str) -> None:
    """The learner went back to the active version's weights (the active one is unchanged)."""
    log_event(conn, "reset", actor, active_version(conn), reason)


def active_stack(events: list[RegistryEvent]) -> list[int | None]:
    """The chain of active versions that rollbacks walk back through, oldest first.

    Promotions push; a rollback to a version on the stack pops down to it (so rolling back
    twice goes two promotions back, not back and forth); a rollback elsewhere pushes.
    The base model is the implicit bottom (an empty stack).
    """
    stack: list[int | None] = []
    for event in events:
        if event.action in ("promote", "force"):
            stack.append(event.to_version)
        elif event.action == "rollback":
            if event.to_version is None:
                stack = []
            elif event.to_version in stack:
                del stack[stack.index(event.to_version) + 1 :]
            else:
                stack.append(event.to_version)
    return stack


def previous_active(conn: Connection) -> tuple[bool, int | None]:
    """(exists, version) of the version a default rollback returns to (None: base)."""
    stack = active_stack(history(conn))
    if not stack:
        return False, None
    return True, stack[-2] if len(stack) > 1 else None


# --- files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stamp:
    size: int
    mtime_ns: int
    sha256: str


_verified: dict[Path, _Stamp] = {}


def verified_path(conn: Connection, data_dir: Path, version: int) -> Path:
    """:func:`verify_version` of the version's row; a missing row is unavailable too."""
    row = get_version(conn, version)
    if row is None:
        raise VersionUnavailable(f"adapter version {version} is missing")
    return verify_version(data_dir, row)


def verify_version(data_dir: Path, row: AdapterVersion) -> Path:
    """The version's directory, after checking that it is servable and its weights match the
    stored sha256; raises :class:`VersionUnavailable` with a message otherwise.

    A file whose size and mtime are unchanged since its last check is not hashed again.
    """
    if row.status not in SERVABLE:
        raise VersionUnavailable(f"adapter version {row.version} is {row.status}")
    return verify_weights(data_dir, row)


def verify_weights(data_dir: Path, row: AdapterVersion) -> Path:
    """The version's directory, after checking only that its weights match the stored
    sha256, whatever its status (an admin may query a rejected version); raises
    :class:`VersionUnavailable` otherwise. Cached like :func:`verify_version`.
    """
    path = resolve_path(data_dir, row.path)
    weights = path / ADAPTER_WEIGHTS
    try:
        stat = os.stat(weights)
    except OSError as exc:
        raise VersionUnavailable(
            f"adapter version {row.version} has no weights file ({weights})"
        ) from exc
    stamp = _verified.get(weights)
    if stamp is None or (stamp.size, stamp.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
        stamp = _Stamp(stat.st_size, stat.st_mtime_ns, sha256_file(weights))
        _verified[weights] = stamp
    if stamp.sha256 != row.sha256:
        raise VersionUnavailable(
            f"adapter version {row.version} failed its integrity check "
            f"(sha256 {stamp.sha256[:12]}..., recorded {row.sha256[:12]}...)"
        )
    return path


def write_provenance(path: Path, provenance: dict[str, Any]) -> None:
    (path / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True))


def read_provenance(path: Path) -> dict[str, Any]:
    return json.loads((path / "provenance.json").read_text())
