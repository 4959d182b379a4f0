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
from learner.store.ingest import (
    IngestError,
    NewExample,
    examples_format,
    ingest_batch,
    validate_bucket_spec,
)
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
        507: {"model": ErrorOut},
    },
)
def submit_tasks(
    body: TaskSubmission, state: State, principal: Submitter, metrics: Metrics
) -> TaskAccepted:
    """Store a batch of examples in a bucket (created on first use), all or nothing.

    Resubmitting an example already in the bucket is a no-op counted in ``duplicates``.
    Chat examples are rendered with the base model's chat template here, as
    ``/v1/chat/completions`` renders a conversation (while the model loads: a wait of up
    to 10 s, then a 503 with Retry-After).
    """
    # Everything that needs no model first: a bad batch is a 422 even while it loads.
    validate_bucket_spec(body.bucket, body.kind, body.grader)
    for i, example in enumerate(body.examples):
        _check_shape(i, example)
    chat = examples_format([e.format for e in body.examples], body.format) == "chat"
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


def _check_shape(index: int, example: ExampleIn) -> None:
    """A 422 naming the example when it is neither shape or its conversation is not one."""
    where = f"examples[{index}]"
    if example.messages is None:
        if example.prompt is None or example.target is None:
            missing = "prompt" if example.prompt is None else "target"
            raise IngestError(
                f"{where}.{missing}: Field required (a completion example has prompt and "
                "target, a chat example messages)"
            )
        return
    if example.prompt is not None or example.target is not None:
        raise IngestError(f"{where}: give either messages or prompt and target, not both")
    if (problem := check_conversation(example.turns())) is not None:
        raise IngestError(f"{where}.messages: {problem}")


def _new_example(index: int, example: ExampleIn, tokenizer: Any) -> NewExample:
    """The example as stored (:func:`_check_shape` passed): a chat one rendered."""
    if example.messages is None:
        assert example.prompt is not None and example.target is not None
        return NewExample(example.prompt, example.target, example.id)
    turns = example.turns()
    try:
        prompt, target = chat_example(tokenizer, turns)
    except ChatTemplateError as exc:
        raise IngestError(f"examples[{index}].messages: {exc}") from exc
    return NewExample(prompt, target, example.id, canonical_messages(turns))
