"""API schemas (pydantic), kept apart from the ORM tables in learner.store.models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from learner.evaluation.graders import GRADERS


def check_utf8(value: str) -> str:
    """JSON can carry lone surrogates (``"\\ud800"``) that no UTF-8 text can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"contains a lone surrogate (U+{ord(exc.object[exc.start]):04X} at character "
            f"{exc.start}); text must be valid Unicode"
        ) from None
    return value


def check_storable_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it on every backend alike.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return check_utf8(value)


Utf8Str = Annotated[str, AfterValidator(check_utf8)]


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC, and RFC 3339 (the
    # schema's date-time) needs the offset.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]
# Published with texts that are stored: PostgreSQL text cannot hold NUL.
NO_NUL: dict[str, Any] = {"pattern": "^[^\\u0000]*$"}


_Out = TypeVar("_Out", bound=BaseModel)


def from_attributes(out: type[_Out], source: object, **computed: Any) -> _Out:
    """An ``out`` whose fields are ``computed`` or else ``source``'s attributes of that name.

    The API's views of stored rows (and of the store's summaries) mostly repeat their
    columns under the same names; this copies those, so that each view spells out only
    the fields it computes. Every field not in ``computed`` must be an attribute of
    ``source``: a field that is neither is an AttributeError, not silently its default.
    """
    copied = {name: getattr(source, name) for name in out.model_fields if name not in computed}
    return out(**copied, **computed)


class StrictModel(BaseModel):
    """Unknown fields are rejected so that a misspelt field is an error, not ignored."""

    # strict: JSON types as the schema states them (false is not a temperature of 0.0, nor
    # "3" a count); an integer still passes for a float.
    model_config = ConfigDict(extra="forbid", strict=True)


class ChatTurnIn(StrictModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(json_schema_extra=NO_NUL)

    @field_validator("content")
    @classmethod
    def storable(cls, value: str) -> str:
        return check_storable_text(value)


class ExampleIn(StrictModel):
    """A completion example (``prompt`` and ``target``) or a chat example (``messages``)."""

    prompt: str | None = Field(
        default=None,
        min_length=1,
        description="Model input, used as-is.",
        json_schema_extra=NO_NUL,
    )
    target: str | None = Field(
        default=None,
        min_length=1,
        description="Expected completion of the prompt.",
        json_schema_extra=NO_NUL,
    )
    messages: list[ChatTurnIn] | None = Field(
        default=None,
        description="A conversation (OpenAI chat format) whose last turn, the assistant's, "
        "is the target; for chat buckets, instead of prompt and target.",
        max_length=64,
        json_schema_extra={"minItems": 2},
    )
    id: str | None = Field(
        default=None, max_length=128, description="Client's own id.", json_schema_extra=NO_NUL
    )

    @field_validator("prompt", "target", "id")
    @classmethod
    def storable(cls, value: str | None) -> str | None:
        return check_storable_text(value) if value is not None else None

    @property
    def format(self) -> str:
        return "chat" if self.messages is not None else "completion"

    def turns(self) -> list[dict[str, str]]:
        """The conversation as ``[{"role", "content"}, ...]`` (empty for completions)."""
        return [m.model_dump() for m in self.messages or []]


class TaskSubmission(StrictModel):
    # The rules below are checked by learner.store.ingest (with messages that say what to
    # fix) and published in the schema (json_schema_extra), so that clients and schema-
    # driven tools know them.
    bucket: str = Field(
        description="Bucket name: 1-64 of letters, digits, '.', '_', '-'.",
        json_schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
    )
    kind: Literal["task", "alignment"] | None = None
    format: Literal["completion", "chat"] | None = Field(
        default=None,
        description="completion ({prompt, target}) or chat ({messages}); null: the examples' "
        "(fixed when the bucket is created).",
    )
    grader: str | None = Field(
        default=None,
        description="Grader name, e.g. exact or numeric; null: the bucket's or exact.",
        # null is listed too: the enum applies to the whole field (string or null), and a
        # null grader is accepted (the default), as schema-driven clients must be told.
        json_schema_extra={"enum": [*sorted(GRADERS), None]},
    )
    examples: list[ExampleIn] = Field(json_schema_extra={"minItems": 1})


class TaskAccepted(BaseModel):
    bucket: str
    accepted: int = Field(description="Examples newly stored.")
    duplicates: int = Field(description="Examples already known (a no-op).")


class BucketTeacherOut(BaseModel):
    focus_rounds: int = Field(description="Rounds in which the teacher chose this bucket.")
    focus_share: float | None = Field(description="Its share of all focus rounds.")
    score: float | None = Field(description="Its score in the teacher's newest decision.")


class BucketOut(BaseModel):
    name: str
    kind: str
    format: str = Field(description="completion or chat.")
    grader: str
    status: str
    created_at: UtcDateTime
    train_examples: int
    probe_examples: int
    probe_accuracy: float | None = Field(description="Latest evaluated probe accuracy.")
    probe_accuracy_step: int | None
    difficulty: float | None = Field(
        default=None, description="Mean IRT difficulty b of the bucket's fitted examples."
    )
    difficulty_items: int = Field(default=0, description="Examples with a fitted difficulty.")
    learner_ability: float | None = Field(
        default=None, description="The learner's IRT ability theta, on the same scale."
    )
    predicted_accuracy: float | None = Field(
        default=None, description="sigmoid(learner_ability - difficulty), the Rasch prediction."
    )
    teacher: BucketTeacherOut


class ExampleOut(BaseModel):
    id: int
    prompt: str = Field(description="In a chat bucket: the turns before the last, rendered.")
    target: str
    messages: list[dict[str, str]] | None = Field(
        default=None, description="A chat example's conversation, as submitted."
    )
    split: str
    external_id: str | None
    created_at: UtcDateTime


class ExamplePage(BaseModel):
    bucket: str
    split: str | None
    examples: list[ExampleOut]
    next_after_id: int | None = Field(description="Pass as after_id for the next page.")


class TeacherDecisionOut(BaseModel):
    step: int = Field(description="Training step at which the round began.")
    bucket: str | None = Field(
        description="The focus bucket (None for a rest, or if the bucket was deleted)."
    )
    policy: str | None
    scores: dict[str, float] = Field(description="Score of every arm offered.")
    reason: str
    steps: int | None = Field(description="Training steps in the round.")
    accuracy: float | None = Field(description="Focus probe accuracy after the round.")
    loss: float | None = Field(description="Mean focus training loss during the round.")
    reward: float | None = Field(description="Learning-progress reward the policy got.")
    created_at: UtcDateTime
    renewed_at: UtcDateTime | None = Field(
        description="A rest: when it was last renewed (one row per rest period)."
    )


class TeacherOut(BaseModel):
    policy: str | None = Field(description="The policy of the running learner.")
    step: int | None = Field(description="Learner step of the newest teacher snapshot.")
    updated_at: UtcDateTime | None
    learner_ability: float | None
    learner_ability_se: float | None
    arm_scores: dict[str, float] = Field(description="Every arm's score in the newest decision.")
    current_round: dict[str, Any] | None
    bucket_difficulty: dict[str, float]
    ensemble: dict[str, Any] | None = Field(description="Members and the newest IRT fit.")
    quarantined: dict[str, str] = Field(
        default_factory=dict, description="Buckets the harm watch excluded, with the reason."
    )
    stalled: dict[str, str] = Field(
        default_factory=dict,
        description="Buckets that showed no progress within their budget (revisited rarely).",
    )
    resting: str | None = Field(
        default=None, description="Why the learner rests (no learnable bucket); None: it trains."
    )
    decisions: list[TeacherDecisionOut] = Field(description="Newest first.")


MAX_REASON_CHARS = 1000
#: Adapter version numbers fit the 32-bit integer column of PostgreSQL.
MAX_VERSION = 2**31 - 1


NoNulStr = Annotated[str, AfterValidator(check_storable_text)]


class PromoteIn(StrictModel):
    force: bool = Field(
        default=False, description="Promote even a version that failed the gate (logged)."
    )
    reason: NoNulStr | None = Field(
        default=None,
        max_length=MAX_REASON_CHARS,
        description="Why; defaults to 'promoted by <key name>'.",
    )


class RollbackIn(StrictModel):
    to: int | None = Field(
        default=None,
        ge=0,
        le=MAX_VERSION,
        description="Version to make active again; 0 is the base model; "
        "omitted: the version active before the current one.",
    )
    reason: NoNulStr | None = Field(
        default=None,
        max_length=MAX_REASON_CHARS,
        description="Why; defaults to 'rolled back by <key name>'.",
    )


class RegistryEventOut(BaseModel):
    """One entry of the append-only log of active-version changes."""

    id: int
    action: str = Field(description="promote, force (a promotion past the gate), rollback, reset.")
    actor: str = Field(description="The API key's name, or the learner.")
    created_at: UtcDateTime
    from_version: int | None = Field(description="Active before (None: the base model).")
    to_version: int | None = Field(description="Active after (None: the base model).")
    reason: str


class ErrorBody(BaseModel):
    """The error object, in the shape OpenAI's clients parse."""

    message: str
    type: str = Field(
        description="invalid_request_error, authentication_error, permission_error, "
        "not_found_error, conflict_error, rate_limit_error or server_error."
    )
    param: str | None = Field(default=None, description="The field to blame, if one is.")
    code: str | None = Field(default=None, description="A stable reason, e.g. model_not_found.")
    details: list[dict[str, object]] | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


#: The error answers every ``/v1`` route can give (documented on each router).
API_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("The body could not be read (not UTF-8 text, say)."),
    401: _error("Missing, invalid or revoked API key."),
    403: _error("The key's scope does not allow this call."),
    413: _error("The request body is too large."),
    415: _error("The body is not sent as JSON."),
    422: _error("Invalid request; the message names the field and the rule."),
    429: _error("Too many failed authentications, or no inference slot free (Retry-After)."),
    503: _error("The database is busy or the model is loading (Retry-After)."),
}
