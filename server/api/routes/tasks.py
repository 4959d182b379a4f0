"""Task submission: ``POST /v1/tasks``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from learner.model.chat import (
    ChatTemplateError,
    canonical_messages,
    chat_example,
    check_conversation,
)
from learner.store.db import write_transaction
from learner.store.ingest import IngestError, NewExample, ingest_batch
from server.api.deps import State, Submitter
from server.api.errors import ApiError
from server.api.schemas import API_ERRORS, ErrorOut, ExampleIn, TaskAccepted, TaskSubmission
from server.observability.metrics import Metrics
from server.serving.engine import ModelNotReady

router = APIRouter(prefix="/v1/tasks", tags=["tasks"], responses=API_ERRORS)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        409: {"model": ErrorOut},
        413: {"model": ErrorOut},
        422: {"model": ErrorOut},
        503: {"model": ErrorOut},
    },
)
def submit_tasks(
    body: TaskSubmission, state: State, principal: Submitter, metrics: Metrics
) -> TaskAccepted:
    """Store a batch of examples in a bucket (created on first use), all or nothing.

    Resubmitting an example already in the bucket is a no-op counted in ``duplicates``.
    Chat examples are rendered with the base model's chat template here, as
    ``/v1/chat/completions`` renders a conversation (a 503 while the model is loading).
    """
    chat = any(e.messages is not None for e in body.examples)
    tokenizer = _chat_tokenizer(state) if chat else None
    examples = [_new_example(i, e, tokenizer) for i, e in enumerate(body.examples)]
    with write_transaction(state.engine) as conn:
        result = ingest_batch(
            conn,
            body.bucket,
            examples,
            kind=body.kind,
            grader=body.grader,
            format=body.format,
            client=principal.name,
            limits=state.ingest_limits,
        )
    # Only this server sees duplicates (the store keeps none), so it counts them itself.
    metrics.count_duplicates(result.bucket, result.duplicates)
    return TaskAccepted(
        bucket=result.bucket, accepted=result.accepted, duplicates=result.duplicates
    )


def _chat_tokenizer(state: Any) -> Any:
    """The tokenizer whose chat template renders chat examples (the serving engine's)."""
    inference = state.inference
    if inference is None:
        raise ApiError(503, "chat tasks need the base model's tokenizer, and serving is disabled")
    try:
        return inference.ready_tokenizer()
    except ModelNotReady as exc:
        message = f"chat tasks are rendered with the model's chat template: {exc}"
        raise ApiError(503, message, code="model_loading", headers={"Retry-After": "5"}) from exc


def _new_example(index: int, example: ExampleIn, tokenizer: Any) -> NewExample:
    """The example as stored; a 422 naming it when it is neither shape or does not render."""
    where = f"examples[{index}]"
    if example.messages is None:
        if example.prompt is None or example.target is None:
            missing = "prompt" if example.prompt is None else "target"
            raise IngestError(
                f"{where}.{missing}: Field required (a completion example has prompt and "
                "target, a chat example messages)"
            )
        return NewExample(example.prompt, example.target, example.id)
    if example.prompt is not None or example.target is not None:
        raise IngestError(f"{where}: give either messages or prompt and target, not both")
    turns = [m.model_dump() for m in example.messages]
    if (problem := check_conversation(turns)) is not None:
        raise IngestError(f"{where}.messages: {problem}")
    try:
        prompt, target = chat_example(tokenizer, turns)
    except ChatTemplateError as exc:
        raise IngestError(f"{where}.messages: {exc}") from exc
    return NewExample(prompt, target, example.id, canonical_messages(turns))
