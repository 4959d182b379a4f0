"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from learner.store.db import is_at_head
from server.deps import State

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: State) -> JSONResponse:
    """The database answers and carries the newest schema revision."""
    try:
        ready = is_at_head(state.engine)
    except SQLAlchemyError as exc:
        return JSONResponse({"status": "unavailable", "reason": str(exc)[:200]}, 503)
    if not ready:
        return JSONResponse({"status": "unavailable", "reason": "schema is not at head"}, 503)
    return JSONResponse({"status": "ready"})
