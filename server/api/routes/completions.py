"""OpenAI-compatible serving: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Model ``lifelong`` is the active adapter version, ``lifelong@N`` a given one, ``base`` the
base model. A version whose files are missing or fail their sha256 check is never served
(409); a version the gate rejected answers only to admin keys. Without a chat template, a
chat is turned into a prompt by joining the message contents with newlines (for the builtin
model: the user's task text, answered directly).

Every request is checked (counts, then model and token budget, ``n`` choices counted) before
it takes a slot of the bounded inference queue. Whole answers may be merged with other
requests of the same model and decoding settings; streamed ones (``stream: true``,
:mod:`server.serving.openai.stream`) and seeded sampling run alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection

from learner.config import GenerationParams
from learner.model import registry
from learner.model.chat import ChatTemplateError, has_chat_template, render_prompt
from learner.store.keys import Principal
from server.api.deps import AppState, ReadConn, Reader, State, Submitter
from server.api.errors import ApiError
from server.api.schemas import API_ERRORS, ErrorOut
from server.process.settings import LimitSettings
from server.serving.engine import InferenceEngine
from server.serving.openai.format import chat_out, completion_out, now, serving_error
from server.serving.openai.schemas import (
    ChatCompletionOut,
    ChatMessage,
    ChatRequest,
    CompletionOut,
    CompletionRequest,
    ModelList,
    ModelOut,
    SamplingFields,
)
from server.serving.openai.stream import (
    MEDIA_TYPE,
    EventStream,
    StreamFormat,
    StreamHooks,
    start_stream,
)

if TYPE_CHECKING:
    from learner.model.generate import Generated

router = APIRouter(prefix="/v1", tags=["completions"], responses=API_ERRORS)


def get_inference(state: State) -> InferenceEngine:
    inference = state.inference
    if inference is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "serving is disabled")
    return inference


Inference = Annotated[InferenceEngine, Depends(get_inference)]


def check_counts(limits: LimitSettings, body: SamplingFields, prompts: int, messages: int) -> None:
    """The configurable bounds that need no tokenizer; 422 naming the limit."""
    problems = []
    if prompts > limits.max_prompts:
        problems.append(f"prompt: {prompts} prompts, at most {limits.max_prompts} allowed")
    if messages > limits.max_messages:
        problems.append(f"messages: {messages} messages, at most {limits.max_messages} allowed")
    stops = body.stops()
    if len(stops) > limits.max_stop:
        problems.append(f"stop: {len(stops)} strings, at most {limits.max_stop} allowed")
    if any(len(s) > limits.max_stop_chars for s in stops):
        problems.append(f"stop: strings of at most {limits.max_stop_chars} characters")
    if problems:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "; ".join(problems))


@dataclass(frozen=True)
class Job:
    """One request's generation: ``choices`` (n) completions of each prompt."""

    model: str
    admin: bool
    prompts: list[str]
    choices: int
    params: GenerationParams
    top_logprobs: int | None

    @classmethod
    def of(cls, body: SamplingFields, prompts: list[str], principal: Principal) -> Job:
        return cls(
            body.model,
            principal.allows("admin"),
            prompts,
            body.n,
            body.params(),
            body.top_logprobs_wanted(),
        )

    @property
    def rows(self) -> list[str]:
        """One row of the batch per choice, grouped by prompt (OpenAI's choice order)."""
        return [p for p in self.prompts for _ in range(self.choices)]


@contextmanager
def _as_http_errors() -> Iterator[None]:
    """Serving failures (full queue, unknown model, too large, ...) as their HTTP errors."""
    try:
        yield
    except Exception as exc:
        error = serving_error(exc)
        if error is None:
            raise
        raise error from exc


async def _prepare(state: AppState, inference: InferenceEngine, job: Job) -> list[int]:
    """Size check on the shared pool (tokenizing is quick); the prompts' token counts.

    A full queue is refused first, so that an overflowing request costs no tokenizing.
    """
    state.inference_queue.refuse_if_full()
    budget = state.settings.limits.max_request_tokens

    def check() -> list[int]:
        inference.check_model(job.model, job.admin)
        return inference.check_size(job.prompts, job.params.max_new_tokens, budget, job.choices)

    return await run_in_threadpool(check)


async def _answer(
    state: AppState, inference: InferenceEngine, job: Job
) -> tuple[list[Generated], str, list[int]]:
    """A whole answer: the choices, the served model name and the prompts' token counts."""
    with _as_http_errors():
        lengths = await _prepare(state, inference, job)
        outputs = await _generate(state, inference, job, max(lengths))
    return [result for result, _ in outputs], outputs[0][1], lengths


async def _generate(
    state: AppState, inference: InferenceEngine, job: Job, longest: int
) -> list[tuple[Generated, str]]:
    """The result and the served model name per row, from the inference queue.

    Requests for the same model with the same decoding settings may be merged into one
    generate call; seeded sampling runs alone, so that its draws do not depend on what
    other clients asked at the same time.
    """

    def run(batch: list[str]) -> list[tuple[Generated, str]]:
        results, served = inference.complete(
            job.model, batch, job.params, admin=job.admin, top_logprobs=job.top_logprobs
        )
        return [(result, served) for result in results]

    queue = state.inference_queue
    params = job.params
    if params.seed is not None and params.temperature > 0:
        return await queue.run(lambda: run(job.rows))
    key = (job.model, job.admin, params, job.top_logprobs)
    return await queue.run_merged(key, job.rows, longest + params.max_new_tokens, run)


async def _stream(
    state: AppState, inference: InferenceEngine, job: Job, chat: bool, include_usage: bool
) -> EventStream:
    """A streamed answer, started once the generation has (errors before are HTTP errors)."""

    def generate(hooks: StreamHooks) -> tuple[list[Generated], str]:
        return inference.complete(
            job.model,
            job.rows,
            job.params,
            admin=job.admin,
            top_logprobs=job.top_logprobs,
            on_start=hooks.on_start,
            on_delta=hooks.on_delta,
            cancel=hooks.cancel,
        )

    with _as_http_errors():
        lengths = await _prepare(state, inference, job)
        stream = await start_stream(state.inference_queue, generate)
    fmt = StreamFormat(chat, len(job.rows), lengths, include_usage)
    return EventStream(stream, fmt)


def _answers(model: type[Any]) -> dict[int | str, dict[str, Any]]:
    """The documented answers: ``model`` as JSON or, with ``stream``, server-sent events."""
    # Before OpenAPI 3.2, an event stream's schema describes each event.
    event = {
        "type": "object",
        "properties": {
            "data": {"type": "string", "description": "A chunk as JSON, or [DONE] at the end."}
        },
        "required": ["data"],
    }
    events = {"schema": event}
    error = {"model": ErrorOut}
    return {
        200: {"model": model, "content": {MEDIA_TYPE: events}},
        404: error,
        409: error,
        422: error,
        429: error,
        503: error,
    }


@router.post("/completions", response_model=None, responses=_answers(CompletionOut))
async def completions(
    body: CompletionRequest, state: State, inference: Inference, principal: Submitter
) -> CompletionOut | EventStream:
    """Complete each prompt ``n`` times (choices ordered by prompt, then by n)."""
    prompts = body.prompts()
    check_counts(state.settings.limits, body, len(prompts), 0)
    job = Job.of(body, prompts, principal)
    if body.stream:
        return await _stream(state, inference, job, chat=False, include_usage=body.include_usage())
    results, served, lengths = await _answer(state, inference, job)
    return completion_out(served, results, lengths)


def chat_prompt(inference: InferenceEngine, messages: list[ChatMessage]) -> str:
    """The conversation rendered by the model's chat template (learner.model.chat, as chat
    examples are stored), or its contents line by line where the model has none."""
    tokenizer = inference.tokenizer
    if not has_chat_template(tokenizer):
        return "\n".join(m.content for m in messages)
    try:
        return render_prompt(tokenizer, [m.model_dump() for m in messages])
    except ChatTemplateError as exc:
        raise ApiError(422, str(exc), param="messages") from exc


@router.post("/chat/completions", response_model=None, responses=_answers(ChatCompletionOut))
async def chat_completions(
    body: ChatRequest, state: State, inference: Inference, principal: Submitter
) -> ChatCompletionOut | EventStream:
    """Answer the conversation ``n`` times."""
    check_counts(state.settings.limits, body, 1, len(body.messages))
    prompt = await run_in_threadpool(chat_prompt, inference, body.messages)  # Jinja: off the loop
    job = Job.of(body, [prompt], principal)
    if body.stream:
        return await _stream(state, inference, job, chat=True, include_usage=body.include_usage())
    results, served, lengths = await _answer(state, inference, job)
    return chat_out(served, results, lengths)


def _models(conn: Connection) -> list[ModelOut]:
    """The servable models: the active version, every candidate or promoted version, the
    base (rejected, pending and retired versions are not listed)."""
    created = now()
    entries = [ModelOut(id="lifelong", object="model", created=created, owned_by="lifelong")]
    for v in registry.list_versions(conn):
        if v.status in registry.SERVABLE:
            entries.append(
                ModelOut(
                    id=f"lifelong@{v.version}",
                    object="model",
                    created=int(v.created_at.timestamp()),
                    owned_by="lifelong",
                )
            )
    entries.append(ModelOut(id="base", object="model", created=created, owned_by="lifelong"))
    return entries


@router.get("/models")
def models(conn: ReadConn, _: Reader) -> ModelList:
    return ModelList(object="list", data=_models(conn))


@router.get("/models/{model}", responses={404: {"model": ErrorOut}})
def retrieve_model(model: str, conn: ReadConn, _: Reader) -> ModelOut:
    """One servable model, by the name ``/v1/models`` lists it under."""
    for entry in _models(conn):
        if entry.id == model:
            return entry
    raise ApiError(
        status.HTTP_404_NOT_FOUND,
        f"model {model!r} is not served: GET /v1/models lists those that are",
        param="model",
        code="model_not_found",
    )
