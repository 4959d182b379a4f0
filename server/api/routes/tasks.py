"""Task submission: ``POST /v1/tasks``."""

from __future__ import annotations

from fastapi import APIRouter, status

from learner.store.db import write_transaction
from learner.store.ingest import NewExample, ingest_batch
from server.api.deps import State, Submitter
from server.api.schemas import API_ERRORS, ErrorOut, TaskAccepted, TaskSubmission
from server.observability.metrics import Metrics

router = APIRouter(prefix="/v1/tasks", tags=["tasks"], responses=API_ERRORS)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def submit_tasks(
    body: TaskSubmission, state: State, principal: Submitter, metrics: Metrics
) -> TaskAccepted:
    """Store a batch of examples in a bucket (created on first use), all or nothing.

    Resubmitting an example already in the bucket is a no-op counted in ``duplicates``.
    """
    examples = [NewExample(e.prompt, e.target, e.id) for e in body.examples]
    with write_transaction(state.engine) as conn:
        result = ingest_batch(
            conn,
            body.bucket,
            examples,
            kind=body.kind,
            grader=body.grader,
            client=principal.name,
            limits=state.ingest_limits,
        )
    # Only this server sees duplicates (the store keeps none), so it counts them itself.
    metrics.count_duplicates(result.bucket, result.duplicates)
    return TaskAccepted(
        bucket=result.bucket, accepted=result.accepted, duplicates=result.duplicates
    )
