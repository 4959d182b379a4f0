"""OpenAI-compatible serving: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Model ``lifelong`` is the active adapter version, ``lifelong@N`` a given one, ``base`` the
base model. A version whose files are missing or fail their sha256 check is never served
(409); a version the gate rejected answers only to admin keys. Without a chat template, a
chat is turned into a prompt by joining the message contents with newlines (for the builtin
model: the user's task text, answered directly).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from learner import registry
from learner.config import GenerationParams
from learner.store.keys import Principal
from server.deps import AppState, ReadConn, Reader, State, Submitter
from server.inference import InferenceEngine, ModelNotReady, RequestTooLarge, UnknownModel
from server.inference_queue import QueueFull
from server.schemas import API_ERRORS, ErrorOut, StrictModel, Utf8Str
from server.settings import LimitSettings

router = APIRouter(prefix="/v1", tags=["completions"], responses=API_ERRORS)
# Schema-level bounds (the configurable, usually smaller ones are in LimitSettings).
SCHEMA_MAX_ITEMS = 1024
SCHEMA_MAX_STOP_CHARS = 1024


class SamplingFields(StrictModel):
    model: str = Field(default="lifelong", max_length=64)
    max_tokens: int = Field(default=16, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: (
        Annotated[Utf8Str, Field(max_length=SCHEMA_MAX_STOP_CHARS)]
        | list[Annotated[Utf8Str, Field(max_length=SCHEMA_MAX_STOP_CHARS)]]
        | None
    ) = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: Literal[1] = 1
    user: str | None = Field(default=None, max_length=256)

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def params(self) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(self.stops()),
            seed=self.seed,
        )


class CompletionRequest(SamplingFields):
    prompt: Utf8Str | list[Utf8Str] = Field(min_length=1)

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt


class ChatMessage(StrictModel):
    role: Literal["system", "user", "assistant"]
    content: Utf8Str


class ChatRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=SCHEMA_MAX_ITEMS)


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


async def _run(
    state: AppState,
    inference: InferenceEngine,
    principal: Principal,
    model: str,
    prompts: list[str],
    params: GenerationParams,
) -> tuple[list[tuple[str, str]], str, dict[str, int]]:
    """Size check and usage count on the shared pool (tokenizing is quick), generation on
    the inference queue."""
    limits = state.settings.limits
    admin = principal.allows("admin")
    try:
        state.inference_queue.refuse_if_full()

        def check() -> list[int]:
            inference.check_model(model, admin)
            return inference.check_size(prompts, params.max_new_tokens, limits.max_request_tokens)

        lengths = await run_in_threadpool(check)
        outputs = await _generate(state, inference, model, admin, prompts, lengths, params)
        served = outputs[0][1]
        results = [result for result, _ in outputs]
        usage = await run_in_threadpool(_usage, inference, lengths, [t for t, _ in results])
        return results, served, usage
    except RequestTooLarge as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except QueueFull as exc:
        headers = {"Retry-After": str(exc.retry_after)}
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc), headers) from exc
    except UnknownModel as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except registry.VersionUnavailable as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except ModelNotReady as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}
        ) from exc


async def _generate(
    state: AppState,
    inference: InferenceEngine,
    model: str,
    admin: bool,
    prompts: list[str],
    lengths: list[int],
    params: GenerationParams,
) -> list[tuple[tuple[str, str], str]]:
    """(text, finish) and the served model name per prompt, from the inference queue.

    Requests for the same model with the same decoding settings may be merged into one
    generate call; seeded sampling runs alone, so that its draws do not depend on what
    other clients asked at the same time.
    """

    def run(batch: list[str]) -> list[tuple[tuple[str, str], str]]:
        results, served = inference.complete(model, batch, params, admin=admin)
        return [(result, served) for result in results]

    queue = state.inference_queue
    if params.seed is not None and params.temperature > 0:
        return await queue.run(lambda: run(prompts))
    width = max(lengths) + params.max_new_tokens
    return await queue.run_merged((model, admin, params), prompts, width, run)


def _usage(
    inference: InferenceEngine, prompt_counts: list[int], texts: list[str]
) -> dict[str, int]:
    prompt_tokens = sum(prompt_counts)
    completion_tokens = sum(inference.count_tokens(t) for t in texts)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    422: {"model": ErrorOut},
    429: {"model": ErrorOut},
    503: {"model": ErrorOut},
}


@router.post("/completions", responses=_ERRORS)
async def completions(
    body: CompletionRequest, state: State, inference: Inference, principal: Submitter
) -> dict[str, Any]:
    prompts = body.prompts()
    check_counts(state.settings.limits, body, len(prompts), 0)
    results, served, usage = await _run(
        state, inference, principal, body.model, prompts, body.params()
    )
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": served,
        "choices": [
            {"index": i, "text": text, "finish_reason": finish, "logprobs": None}
            for i, (text, finish) in enumerate(results)
        ],
        "usage": usage,
    }


def chat_prompt(inference: InferenceEngine, messages: list[ChatMessage]) -> str:
    tokenizer = inference.tokenizer
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        turns = [m.model_dump() for m in messages]
        try:
            return str(
                tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
            )
        except Exception as exc:  # jinja2 TemplateError and friends: the messages' fault
            message = f"messages do not fit the model's chat template: {exc}"
            raise HTTPException(422, message) from exc
    return "\n".join(m.content for m in messages)


@router.post("/chat/completions", responses=_ERRORS)
async def chat_completions(
    body: ChatRequest, state: State, inference: Inference, principal: Submitter
) -> dict[str, Any]:
    check_counts(state.settings.limits, body, 1, len(body.messages))
    prompt = await run_in_threadpool(chat_prompt, inference, body.messages)  # Jinja: off the loop
    results, served, usage = await _run(
        state, inference, principal, body.model, [prompt], body.params()
    )
    text, finish = results[0]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
            }
        ],
        "usage": usage,
    }


@router.get("/models")
def models(conn: ReadConn, _: Reader) -> dict[str, Any]:
    """The servable models: the active version, every candidate or promoted version, the
    base (rejected, pending and retired versions are not listed)."""
    now = int(time.time())
    entries = [{"id": "lifelong", "object": "model", "created": now, "owned_by": "lifelong"}]
    for v in registry.list_versions(conn):
        if v.status in registry.SERVABLE:
            created = int(v.created_at.timestamp())
            entries.append(
                {
                    "id": f"lifelong@{v.version}",
                    "object": "model",
                    "created": created,
                    "owned_by": "lifelong",
                }
            )
    entries.append({"id": "base", "object": "model", "created": now, "owned_by": "lifelong"})
    return {"object": "list", "data": entries}
