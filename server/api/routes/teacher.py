"""The teacher: its policy, every arm's score, the learner's ability and recent decisions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from learner.store.teacher import latest_snapshot, recent_decisions
from server.api.deps import ReadConn, Reader
from server.api.schemas import API_ERRORS, TeacherDecisionOut, TeacherOut

router = APIRouter(prefix="/v1/teacher", tags=["teacher"], responses=API_ERRORS)


@router.get("")
def get_teacher(
    conn: ReadConn,
    _: Reader,
    decisions: Annotated[int, Query(ge=0, le=1000, description="How many to list.")] = 20,
) -> TeacherOut:
    """The newest teacher snapshot (written with each learner checkpoint) and decisions.

    Arm scores are those of the newest decision; each decision lists every arm's score, the
    reason for the choice and, once the round ended, its probe accuracy and reward.
    """
    snapshot = latest_snapshot(conn)
    rows = recent_decisions(conn, max(decisions, 1))
    state = snapshot.state if snapshot is not None else {}
    return TeacherOut(
        policy=snapshot.policy if snapshot else (rows[0].policy if rows else None),
        step=snapshot.step if snapshot else None,
        updated_at=snapshot.created_at if snapshot else None,
        learner_ability=state.get("learner_ability"),
        learner_ability_se=state.get("learner_ability_se"),
        arm_scores=rows[0].scores if rows else {},
        current_round=state.get("round"),
        bucket_difficulty=state.get("bucket_difficulty", {}),
        ensemble=state.get("ensemble"),
        quarantined=state.get("quarantined") or {},
        stalled=_stalled(state),
        resting=state.get("resting"),
        decisions=[TeacherDecisionOut(**vars(d)) for d in rows[:decisions]],
    )


def _stalled(state: dict[str, Any]) -> dict[str, str]:
    """The stalled arms of a policy that tracks them (``lp_zpd``), from its saved state."""
    extra = (state.get("policy_state") or {}).get("extra") or {}
    return dict((extra.get("stalls") or {}).get("stalled") or {})
