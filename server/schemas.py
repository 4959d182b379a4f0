"""API schemas (pydantic), kept apart from the ORM tables in learner.store.models."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    difficulty: float | None = Field(default=None, description="Mean fitted IRT difficulty.")
    teacher: dict[str, float] | None = Field(default=None, description="Teacher statistics.")


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


class ErrorBody(BaseModel):
    message: str
    details: list[dict[str, object]] | None = None


class ErrorOut(BaseModel):
    error: ErrorBody
