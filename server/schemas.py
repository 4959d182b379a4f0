"""API schemas (pydantic), kept apart from the ORM tables in learner.store.models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator


class StrictModel(BaseModel):
    """Unknown fields are rejected so that a misspelt field is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class ExampleIn(StrictModel):
    prompt: str = Field(min_length=1, description="Model input, used as-is.")
    target: str = Field(min_length=1, description="Expected completion of the prompt.")
    id: str | None = Field(default=None, max_length=128, description="Client's own id.")

    @field_validator("prompt", "target", "id")
    @classmethod
    def no_nul(cls, value: str | None) -> str | None:
        # PostgreSQL text cannot hold NUL; refuse it on every backend alike.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class TaskSubmission(StrictModel):
    bucket: str = Field(description="Bucket name: 1-64 of letters, digits, '.', '_', '-'.")
    kind: Literal["task", "alignment"] | None = None
    grader: str | None = Field(default=None, description="Grader name, e.g. exact or numeric.")
    examples: list[ExampleIn]


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
    grader: str
    status: str
    created_at: datetime
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
    prompt: str
    target: str
    split: str
    external_id: str | None
    created_at: datetime


class ExamplePage(BaseModel):
    bucket: str
    split: str | None
    examples: list[ExampleOut]
    next_after_id: int | None = Field(description="Pass as after_id for the next page.")


class TeacherDecisionOut(BaseModel):
    step: int = Field(description="Training step at which the round began.")
    bucket: str | None = Field(description="The focus bucket (None if it was deleted).")
    policy: str | None
    scores: dict[str, float] = Field(description="Score of every arm offered.")
    reason: str
    steps: int | None = Field(description="Training steps in the round.")
    accuracy: float | None = Field(description="Focus probe accuracy after the round.")
    loss: float | None = Field(description="Mean focus training loss during the round.")
    reward: float | None = Field(description="Learning-progress reward the policy got.")
    created_at: datetime


class TeacherOut(BaseModel):
    policy: str | None = Field(description="The policy of the running learner.")
    step: int | None = Field(description="Learner step of the newest teacher snapshot.")
    updated_at: datetime | None
    learner_ability: float | None
    learner_ability_se: float | None
    arm_scores: dict[str, float] = Field(description="Every arm's score in the newest decision.")
    current_round: dict[str, Any] | None
    bucket_difficulty: dict[str, float]
    ensemble: dict[str, Any] | None = Field(description="Members and the newest IRT fit.")
    decisions: list[TeacherDecisionOut] = Field(description="Newest first.")


MAX_REASON_CHARS = 1000
#: Adapter version numbers fit the 32-bit integer column of PostgreSQL.
MAX_VERSION = 2**31 - 1


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it on every backend alike.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


NoNulStr = Annotated[str, AfterValidator(_no_nul)]


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
    created_at: datetime
    from_version: int | None = Field(description="Active before (None: the base model).")
    to_version: int | None = Field(description="Active after (None: the base model).")
    reason: str


class ErrorBody(BaseModel):
    message: str
    details: list[dict[str, object]] | None = None


class ErrorOut(BaseModel):
    error: ErrorBody
