"""Generated choices as OpenAI's answer objects (choices, log probabilities, usage), and
serving failures as OpenAI's errors.

Shared by whole answers (:mod:`server.api.routes.completions`) and streamed ones
(:mod:`server.serving.openai.stream`), so that both report the same numbers and errors.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import status

from learner.model import registry
from server.api.errors import ApiError
from server.serving.engine import ModelNotReady, RequestTooLarge, UnknownModel
from server.serving.openai.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionOut,
    ChatLogprobs,
    ChatTokenLogprob,
    CompletionChoice,
    CompletionLogprobs,
    CompletionOut,
    TopLogprob,
    Usage,
)
from server.serving.queue import QueueFull

if TYPE_CHECKING:
    from learner.model.generate import Generated, TokenLogprob


def serving_error(exc: Exception) -> ApiError | None:
    """The HTTP error for a failure of serving (None: not one; a bug, answered 500)."""
    if isinstance(exc, RequestTooLarge):
        code = "context_length_exceeded" if "context" in str(exc) else "request_too_large"
        return ApiError(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc), code=code)
    if isinstance(exc, QueueFull):
        headers = {"Retry-After": str(exc.retry_after)}
        return ApiError(
            status.HTTP_429_TOO_MANY_REQUESTS, str(exc), code="queue_full", headers=headers
        )
    if isinstance(exc, UnknownModel):
        return ApiError(status.HTTP_404_NOT_FOUND, str(exc), param="model", code="model_not_found")
    if isinstance(exc, registry.VersionUnavailable):
        return ApiError(status.HTTP_409_CONFLICT, str(exc), param="model", code="model_unavailable")
    if isinstance(exc, ModelNotReady):
        return ApiError(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            str(exc),
            code="model_loading",
            headers={"Retry-After": "5"},
        )
    return None


def completion_id(chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: list[int], results: list[Generated]) -> Usage:
    """``prompt_tokens``: one count per prompt (a prompt with n choices counts once)."""
    prompt = sum(prompt_tokens)
    completion = sum(r.tokens for r in results)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def completion_logprobs(tokens: tuple[TokenLogprob, ...] | None) -> CompletionLogprobs | None:
    """The legacy shape; each position's top dict holds the chosen token too, as OpenAI's."""
    if tokens is None:
        return None
    offsets, offset = [], 0
    for t in tokens:
        offsets.append(offset)
        offset += len(t.token)
    return CompletionLogprobs(
        tokens=[t.token for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[{**dict(t.top), t.token: t.logprob} for t in tokens],
        text_offset=offsets,
    )


def _completion_choice(index: int, result: Generated) -> CompletionChoice:
    return CompletionChoice(
        index=index,
        text=result.text,
        finish_reason=result.finish,  # type: ignore[arg-type]
        logprobs=completion_logprobs(result.logprobs),
    )


def chat_logprobs(tokens: tuple[TokenLogprob, ...] | None) -> ChatLogprobs | None:
    if tokens is None:
        return None
    content = [
        ChatTokenLogprob(
            token=t.token,
            logprob=t.logprob,
            bytes=list(t.token.encode("utf-8")),
            top_logprobs=[
                TopLogprob(token=name, logprob=value, bytes=list(name.encode("utf-8")))
                for name, value in t.top
            ],
        )
        for t in tokens
    ]
    return ChatLogprobs(content=content)


def _chat_choice(index: int, result: Generated) -> ChatChoice:
    return ChatChoice(
        index=index,
        message=AssistantMessage(role="assistant", content=result.text),
        finish_reason=result.finish,  # type: ignore[arg-type]
        logprobs=chat_logprobs(result.logprobs),
    )


def _answer_fields(
    chat: bool,
    served: str,
    results: list[Generated],
    prompt_tokens: list[int],
    choice: Callable[[int, Generated], CompletionChoice | ChatChoice],
) -> dict[str, Any]:
    """A whole completion's or chat completion's fields but its object name: a fresh id, the
    time, the model that answered, each result's ``choice`` in order, and the usage."""
    return {
        "id": completion_id(chat=chat),
        "created": now(),
        "model": served,
        "choices": [choice(i, r) for i, r in enumerate(results)],
        "usage": usage(prompt_tokens, results),
    }


def completion_out(
    served: str, results: list[Generated], prompt_tokens: list[int]
) -> CompletionOut:
    """The answer of ``POST /v1/completions``."""
    return CompletionOut(
        object="text_completion",
        **_answer_fields(False, served, results, prompt_tokens, _completion_choice),
    )


def chat_out(served: str, results: list[Generated], prompt_tokens: list[int]) -> ChatCompletionOut:
    """The answer of ``POST /v1/chat/completions``."""
    return ChatCompletionOut(
        object="chat.completion",
        **_answer_fields(True, served, results, prompt_tokens, _chat_choice),
    )
