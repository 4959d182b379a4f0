"""The accuracy matrix: versions x buckets, with retention metrics per version (DESIGN 7).

The numbers come from ``learner.evaluation.matrix``, derived from the stored per-probe
answers of every version.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from learner.evaluation.matrix import matrix_report
from server.api.deps import ReadConn, Reader
from server.api.schemas import API_ERRORS

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"], responses=API_ERRORS)


@router.get("")
def get_evaluations(conn: ReadConn, _: Reader) -> dict[str, Any]:
    """The accuracy matrix with average accuracy, backward transfer, forgetting and NFR."""
    report: dict[str, Any] = matrix_report(conn)
    return report
