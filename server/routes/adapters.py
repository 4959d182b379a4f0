"""The adapter registry: versions with provenance and gate reports, the active version."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel

from learner import registry
from learner.store.models import AdapterVersion
from server.deps import ReadConn, Reader
from server.schemas import ErrorOut

router = APIRouter(prefix="/v1/adapters", tags=["adapters"])
MAX_VERSION = 2**31 - 1  # the column is a 32-bit integer on PostgreSQL


class AdapterOut(BaseModel):
    version: int
    parent_version: int | None
    base_model: str
    status: str
    train_step: int
    sha256: str
    path: str
    created_at: datetime
    active: bool
    provenance: dict[str, Any]
    metrics: dict[str, Any]
    gate_report: dict[str, Any] | None


class ActiveOut(BaseModel):
    version: int | None
    model: str
    adapter: AdapterOut | None


def _out(row: AdapterVersion, active: int | None) -> AdapterOut:
    return AdapterOut(
        version=row.version,
        parent_version=row.parent_version,
        base_model=row.base_model,
        status=row.status,
        train_step=row.train_step,
        sha256=row.sha256,
        path=row.path,
        created_at=row.created_at,
        active=row.version == active,
        provenance=row.provenance,
        metrics=row.metrics,
        gate_report=row.gate_report,
    )


@router.get("")
def list_adapters(conn: ReadConn, _: Reader) -> list[AdapterOut]:
    active = registry.active_version(conn)
    return [_out(v, active) for v in registry.list_versions(conn)]


@router.get("/active")
def get_active(conn: ReadConn, _: Reader) -> ActiveOut:
    """The served version (``version: null`` means the base model is served)."""
    active = registry.active_version(conn)
    row = registry.get_version(conn, active) if active is not None else None
    return ActiveOut(
        version=active,
        model="base" if active is None else f"lifelong@{active}",
        adapter=_out(row, active) if row else None,
    )


@router.get("/{version}", responses={404: {"model": ErrorOut}})
def get_adapter(
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)], conn: ReadConn, _: Reader
) -> AdapterOut:
    row = registry.get_version(conn, version)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"adapter version {version} does not exist")
    return _out(row, registry.active_version(conn))
