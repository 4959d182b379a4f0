"""The adapter registry: versions with provenance and gate reports, the active version, and
the admin actions that change it (promote, rollback), each logged with who and why."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel
from sqlalchemy import Connection

from learner.evaluation.matrix import version_report
from learner.model import registry
from learner.store.db import write_transaction
from learner.store.models import AdapterVersion, RegistryEvent
from server.api.deps import Admin, ReadConn, Reader, State
from server.api.schemas import (
    API_ERRORS,
    MAX_VERSION,
    ErrorOut,
    PromoteIn,
    RegistryEventOut,
    RollbackIn,
    UtcDateTime,
    from_attributes,
)

router = APIRouter(prefix="/v1/adapters", tags=["adapters"], responses=API_ERRORS)
VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION)]
_ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorOut},
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
}
# Statuses whose files are gone or were never finished: nothing to make active.
_NO_FILES = {
    "pending": "its files are still being written (or never were)",
    "retired": "its files have been pruned",
}


class AdapterOut(BaseModel):
    version: int
    parent_version: int | None
    base_model: str
    status: str
    train_step: int
    sha256: str
    path: str
    created_at: UtcDateTime
    active: bool
    provenance: dict[str, Any]
    metrics: dict[str, Any]
    gate_report: dict[str, Any] | None
    evaluation: dict[str, Any] | None = None


class ActiveOut(BaseModel):
    version: int | None
    model: str
    adapter: AdapterOut | None


def _out(conn: Connection, row: AdapterVersion, active: int | None) -> AdapterOut:
    return from_attributes(
        AdapterOut, row, active=row.version == active, evaluation=version_report(conn, row.version)
    )


def _event_out(event: RegistryEvent) -> RegistryEventOut:
    return from_attributes(RegistryEventOut, event)


def _conflict(message: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, message)


def _existing(conn: Connection, version: int) -> AdapterVersion:
    row = registry.get_version(conn, version)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"adapter version {version} does not exist")
    return row


# --- reads -------------------------------------------------------------------------------


@router.get("")
def list_adapters(conn: ReadConn, _: Reader) -> list[AdapterOut]:
    active = registry.active_version(conn)
    return [_out(conn, v, active) for v in registry.list_versions(conn)]


@router.get("/active")
def get_active(conn: ReadConn, _: Reader) -> ActiveOut:
    """The served version (``version: null`` means the base model is served)."""
    active = registry.active_version(conn)
    row = registry.get_version(conn, active) if active is not None else None
    return ActiveOut(
        version=active,
        model="base" if active is None else f"lifelong@{active}",
        adapter=_out(conn, row, active) if row else None,
    )


# Declared before ``/{version}``, which would otherwise take "history" for a version.
@router.get("/history")
def get_history(conn: ReadConn, _: Reader) -> list[RegistryEventOut]:
    """Every change of the active version (and every learner reset), oldest first."""
    return [_event_out(e) for e in registry.history(conn)]


@router.get("/{version}", responses={404: {"model": ErrorOut}})
def get_adapter(version: VersionPath, conn: ReadConn, _: Reader) -> AdapterOut:
    row = _existing(conn, version)
    return _out(conn, row, registry.active_version(conn))


# --- promote -----------------------------------------------------------------------------


def gate_failure(row: AdapterVersion) -> str | None:
    """The gate's summary if the version failed it, else None."""
    report = row.gate_report or {}
    if row.status != "rejected" and report.get("verdict") != "reject":
        return None
    return str(report.get("summary") or "no gate summary was recorded")


def _check_promotable(
    data_dir: FilePath, row: AdapterVersion, active: int | None, force: bool
) -> bool:
    """Raise 409 unless ``row`` may become active; returns whether it takes ``force``."""
    v = row.version
    if v == active:
        raise _conflict(f"adapter version {v} is already active")
    if row.status in _NO_FILES:
        raise _conflict(f"adapter version {v} is {row.status}: {_NO_FILES[row.status]}")
    try:
        # The files alone: a rejected version's status is settled by ``force`` below.
        registry.verify_weights(data_dir, row)
    except registry.VersionUnavailable as exc:
        raise _conflict(str(exc)) from exc
    failure = gate_failure(row)
    if failure is not None and not force:
        raise _conflict(f"v{v} failed the gate: {failure}; pass force=true to promote it anyway")
    return failure is not None


@router.post("/{version}/promote", responses=_ACTION_ERRORS)
def promote_adapter(
    version: VersionPath, state: State, principal: Admin, body: PromoteIn | None = None
) -> RegistryEventOut:
    """Make ``version`` the served one. A version that failed the gate needs
    ``force: true``; such a promotion is logged with action ``force``."""
    body = body or PromoteIn()
    with write_transaction(state.engine) as conn:
        row = _existing(conn, version)
        active = registry.active_version(conn)
        forced = _check_promotable(state.settings.data_dir, row, active, body.force)
        reason = body.reason or f"promoted by {principal.name}"
        registry.promote(conn, version, principal.name, reason, force=forced)
        return _newest_event(conn)


def _newest_event(conn: Connection) -> RegistryEventOut:
    event = registry.newest_event(conn)
    assert event is not None  # just written in this transaction
    return _event_out(event)


# --- rollback ----------------------------------------------------------------------------


def _check_rollback_target(
    conn: Connection, data_dir: FilePath, row: AdapterVersion, default: bool
) -> None:
    """Raise 409 unless ``row`` was served before and still can be."""
    v = row.version
    prefix = f"cannot roll back to v{v}" + (" (the previously active version)" if default else "")
    hint = "; pass 'to' to choose another version" if default else ""
    if row.status not in registry.SERVABLE:
        raise _conflict(f"{prefix}: it is {row.status}{hint}")
    if row.status != "promoted" and not registry.was_active(conn, v):
        raise _conflict(
            f"{prefix}: it was never active; promote it instead (POST /v1/adapters/{v}/promote)"
        )
    try:
        registry.verify_version(data_dir, row)
    except registry.VersionUnavailable as exc:
        raise _conflict(f"{prefix}: {exc}{hint}") from exc


def _rollback_target(conn: Connection, data_dir: FilePath, to: int | None) -> int | None:
    """The version a rollback makes active (None: the base model), after every check."""
    active = registry.active_version(conn)
    if to is None:
        exists, target = registry.previous_active(conn)
        if not exists:
            raise _conflict("nothing to roll back: the base model is active")
    else:
        target = to or None  # 0 names the base model
        if target == active:
            name = "the base model" if target is None else f"adapter version {target}"
            raise _conflict(f"{name} is already active")
    if target is not None:
        _check_rollback_target(conn, data_dir, _existing(conn, target), default=to is None)
    return target


@router.post("/rollback", responses=_ACTION_ERRORS)
def rollback_adapter(
    state: State, principal: Admin, body: RollbackIn | None = None
) -> RegistryEventOut:
    """Make an earlier version active again: ``to`` (0: the base model), or by default the
    version active before the current one (repeated rollbacks walk further back)."""
    body = body or RollbackIn()
    with write_transaction(state.engine) as conn:
        target = _rollback_target(conn, state.settings.data_dir, body.to)
        reason = body.reason or f"rolled back by {principal.name}"
        registry.rollback(conn, target, principal.name, reason)
        return _newest_event(conn)
