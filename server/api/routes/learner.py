"""The learner's status and control (pause, resume)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel

from learner.store import control, lease
from learner.store.db import write_transaction
from server.api.deps import Admin, ReadConn, Reader, State
from server.api.schemas import API_ERRORS

router = APIRouter(prefix="/v1/learner", tags=["learner"], responses=API_ERRORS)


class LearnerOut(BaseModel):
    holder: str | None
    alive: bool
    heartbeat_age_seconds: float | None
    paused: bool
    status: dict[str, Any]


class ControlAccepted(BaseModel):
    command_id: int
    command: str
    paused: bool


@router.get("")
def get_learner(conn: ReadConn, state: State, _: Reader) -> LearnerOut:
    """Who holds the training lease, whether it is alive, and its latest loop status."""
    row = lease.read_lease(conn)
    paused = control.is_paused(conn)
    if row is None:
        return LearnerOut(
            holder=None, alive=False, heartbeat_age_seconds=None, paused=paused, status={}
        )
    age = (datetime.now(UTC) - lease.as_utc(row.heartbeat_at)).total_seconds()
    return LearnerOut(
        holder=row.holder,
        alive=age < state.settings.learner.lease_seconds,
        heartbeat_age_seconds=round(age, 3),
        paused=paused,
        status=row.state,
    )


def _command(state: State, name: str, who: str) -> ControlAccepted:
    with write_transaction(state.engine) as conn:
        command_id = control.submit_command(conn, name, who)
    return ControlAccepted(command_id=command_id, command=name, paused=name == "pause")


@router.post("/pause", status_code=status.HTTP_202_ACCEPTED)
def pause(state: State, principal: Admin) -> ControlAccepted:
    """Ask the learner to stop training after its current step (it keeps its lease)."""
    return _command(state, "pause", principal.name)


@router.post("/resume", status_code=status.HTTP_202_ACCEPTED)
def resume(state: State, principal: Admin) -> ControlAccepted:
    return _command(state, "resume", principal.name)
