"""Requests and answers of the OpenAI-compatible routes, in the shapes OpenAI's API uses.

Requests accept the fields this service can honour (others are rejected, so that a client
relying on an unsupported one hears so instead of being ignored). The answer models
document the JSON bodies; streamed answers are described in :mod:`server.serving.openai.stream`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from learner.config import GenerationParams
from server.api.schemas import StrictModel, Utf8Str

# Schema-level bounds (the configurable, usually smaller ones are in LimitSettings).
SCHEMA_MAX_ITEMS = 1024
SCHEMA_MAX_STOP_CHARS = 1024
MAX_TOKENS = 4096
#: OpenAI's own bounds: choices per prompt, and top log probabilities per token.
MAX_CHOICES = 128
MAX_COMPLETION_LOGPROBS = 5
MAX_CHAT_TOP_LOGPROBS = 20

StopStr = Annotated[Utf8Str, Field(max_length=SCHEMA_MAX_STOP_CHARS)]


class StreamOptions(StrictModel):
    include_usage: bool = Field(
        default=False, description="Send a last chunk with the usage and no choices."
    )


class SamplingFields(StrictModel):
    """What completions and chat completions share."""

    model: str = Field(
        default="lifelong",
        max_length=64,
        description="'lifelong' (the active version), 'lifelong@<version>' or 'base'.",
    )
    max_tokens: int = Field(default=16, ge=1, le=MAX_TOKENS)

    @field_validator("*", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: object, info: ValidationInfo) -> object:
        """JSON true is not an integer (the schema says integer), but pydantic's lax mode
        would take it as 1: schemathesis found ``max_completion_tokens: true`` accepted.
        Only integer fields refuse it (chat's ``logprobs`` is a boolean)."""
        field = cls.model_fields.get(info.field_name or "")
        integer = field is not None and field.annotation in (int, int | None)
        if integer and isinstance(value, bool):
            raise ValueError("must be an integer, not a boolean")
        return value

    temperature: float = Field(default=1.0, ge=0.0, le=2.0, description="0: greedy decoding.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: StopStr | list[StopStr] | None = None
    seed: int | None = Field(
        default=None, ge=0, le=2**63 - 1, description="Makes sampling repeatable."
    )
    n: int = Field(
        default=1,
        ge=1,
        le=MAX_CHOICES,
        description="Choices per prompt; each counts in the per-request token budget.",
    )
    stream: bool = Field(default=False, description="Answer as server-sent events.")
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def new_tokens(self) -> int:
        return self.max_tokens

    def params(self) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=self.new_tokens(),
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(self.stops()),
            seed=self.seed,
        )

    def top_logprobs_wanted(self) -> int | None:
        """How many alternatives per token to report; None: no log probabilities."""
        return None

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(SamplingFields):
    prompt: Utf8Str | list[Utf8Str] = Field(min_length=1)
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=MAX_COMPLETION_LOGPROBS,
        description="Log probabilities of each token and of this many likeliest ones.",
    )

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt

    def top_logprobs_wanted(self) -> int | None:
        return self.logprobs


class ChatMessage(StrictModel):
    role: Literal["system", "user", "assistant"]
    content: Utf8Str


class ChatRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=SCHEMA_MAX_ITEMS)
    max_completion_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS, description="Replaces max_tokens when given."
    )
    logprobs: bool = Field(default=False, description="Log probabilities of each token.")
    top_logprobs: int | None = Field(
        default=None,
        ge=0,
        le=MAX_CHAT_TOP_LOGPROBS,
        description="With logprobs: also this many likeliest tokens at each position.",
    )

    @model_validator(mode="after")
    def top_needs_logprobs(self) -> Self:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def new_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens

    def top_logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


# --- answers ------------------------------------------------------------------------------

FinishReason = Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Tokens of the prompts (once each, whatever n).")
    completion_tokens: int = Field(description="Tokens generated, over all choices.")
    total_tokens: int


class CompletionLogprobs(BaseModel):
    """The legacy completions shape: parallel lists, one entry per generated token."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] = Field(
        description="The likeliest tokens at each position, the chosen one included."
    )
    text_offset: list[int] = Field(description="Where each token starts in the choice's text.")


class CompletionChoice(BaseModel):
    index: int = Field(description="prompt index x n + choice index.")
    text: str
    finish_reason: FinishReason
    logprobs: CompletionLogprobs | None


class CompletionOut(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str = Field(description="The model that answered: 'lifelong@<version>' or 'base'.")
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = Field(description="The token's text as UTF-8 bytes.")


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None
    refusal: list[ChatTokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    refusal: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: ChatLogprobs | None


class ChatCompletionOut(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str = Field(description="The model that answered: 'lifelong@<version>' or 'base'.")
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage


class ModelOut(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelOut]
