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
from pydantic import Field

from learner import registry
from learner.config import GenerationParams
from learner.store.keys import Principal
from server.deps import ReadConn, Reader, State, Submitter
from server.inference import InferenceEngine, ModelNotReady, UnknownModel
from server.schemas import ErrorOut, StrictModel

router = APIRouter(prefix="/v1", tags=["completions"])
MAX_PROMPTS = 64


class SamplingFields(StrictModel):
    model: str = "lifelong"
    max_tokens: int = Field(default=16, ge=1, le=1024)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: Literal[1] = 1
    user: str | None = None

    def params(self) -> GenerationParams:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationParams(
            max_new_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(stops),
            seed=self.seed,
        )


class CompletionRequest(SamplingFields):
    prompt: str | list[str] = Field(min_length=1)


class ChatMessage(StrictModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)


def get_inference(state: State) -> InferenceEngine:
    inference = state.inference
    if inference is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "serving is disabled")
    return inference


Inference = Annotated[InferenceEngine, Depends(get_inference)]


def _run(
    inference: InferenceEngine,
    principal: Principal,
    model: str,
    prompts: list[str],
    params: GenerationParams,
) -> tuple[list[tuple[str, str]], str]:
    try:
        return inference.complete(model, prompts, params, admin=principal.allows("admin"))
    except UnknownModel as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except registry.VersionUnavailable as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except ModelNotReady as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}
        ) from exc


def _usage(inference: InferenceEngine, prompts: list[str], texts: list[str]) -> dict[str, int]:
    prompt_tokens = sum(inference.count_tokens(p) for p in prompts)
    completion_tokens = sum(inference.count_tokens(t) for t in texts)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    503: {"model": ErrorOut},
}


@router.post("/completions", responses=_ERRORS)
def completions(
    body: CompletionRequest, inference: Inference, principal: Submitter
) -> dict[str, Any]:
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) > MAX_PROMPTS:
        raise HTTPException(413, f"at most {MAX_PROMPTS} prompts per request")
    results, served = _run(inference, principal, body.model, prompts, body.params())
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": served,
        "choices": [
            {"index": i, "text": text, "finish_reason": finish, "logprobs": None}
            for i, (text, finish) in enumerate(results)
        ],
        "usage": _usage(inference, prompts, [t for t, _ in results]),
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
def chat_completions(
    body: ChatRequest, inference: Inference, principal: Submitter
) -> dict[str, Any]:
    prompt = chat_prompt(inference, body.messages)
    results, served = _run(inference, principal, body.model, [prompt], body.params())
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
        "usage": _usage(inference, [prompt], [text]),
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
