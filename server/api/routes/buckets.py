"""Buckets and their examples, with difficulty, learner ability and teacher statistics."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status

from learner.model.chat import parse_messages
from learner.store.buckets import BucketSummary, get_bucket, list_buckets, list_examples
from learner.store.difficulty import BucketDifficulty, bucket_difficulties
from learner.store.ingest import BUCKET_NAME_RE
from learner.store.models import Example
from learner.store.teacher import TeacherView, teacher_view
from server.api.deps import ReadConn, Reader
from server.api.schemas import (
    API_ERRORS,
    BucketOut,
    BucketTeacherOut,
    ErrorOut,
    ExampleOut,
    ExamplePage,
    from_attributes,
)

router = APIRouter(prefix="/v1/buckets", tags=["buckets"], responses=API_ERRORS)


def _bucket_out(
    summary: BucketSummary, difficulty: BucketDifficulty | None, view: TeacherView
) -> BucketOut:
    b = difficulty.difficulty if difficulty is not None else None
    theta = view.ability
    rounds = view.focus_rounds.get(summary.id, 0)
    total = sum(view.focus_rounds.values())
    return from_attributes(
        BucketOut,
        summary,
        difficulty=b,
        difficulty_items=difficulty.items if difficulty is not None else 0,
        learner_ability=theta,
        predicted_accuracy=None if b is None or theta is None else 1 / (1 + math.exp(b - theta)),
        teacher=BucketTeacherOut(
            focus_rounds=rounds,
            focus_share=rounds / total if total else None,
            score=view.arm_scores.get(summary.name),
        ),
    )


def _example_out(row: Example) -> ExampleOut:
    messages = parse_messages(row.messages) if row.messages is not None else None
    return from_attributes(ExampleOut, row, messages=messages)


def _found(conn: ReadConn, name: str) -> BucketSummary:
    # A name that could never have been stored (e.g. with a NUL byte, which PostgreSQL
    # refuses in queries) is simply not found.
    summary = get_bucket(conn, name) if BUCKET_NAME_RE.match(name) else None
    if summary is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"bucket {name!r} does not exist")
    return summary


@router.get("")
def get_buckets(conn: ReadConn, _: Reader) -> list[BucketOut]:
    """Every bucket with its counts, latest probe accuracy, difficulty and teacher statistics."""
    difficulty = bucket_difficulties(conn)
    view = teacher_view(conn)
    return [_bucket_out(s, difficulty.get(s.id), view) for s in list_buckets(conn)]


@router.get("/{name}", responses={404: {"model": ErrorOut}})
def get_one_bucket(name: str, conn: ReadConn, _: Reader) -> BucketOut:
    summary = _found(conn, name)
    difficulty = bucket_difficulties(conn, summary.id).get(summary.id)
    return _bucket_out(summary, difficulty, teacher_view(conn))


@router.get("/{name}/examples", responses={404: {"model": ErrorOut}})
def get_bucket_examples(
    name: str,
    conn: ReadConn,
    _: Reader,
    split: Literal["train", "probe"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_id: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> ExamplePage:
    """A page of the bucket's examples in id order; follow ``next_after_id`` for more."""
    summary = _found(conn, name)
    rows = list_examples(conn, summary.id, split, limit, after_id)
    return ExamplePage(
        bucket=name,
        split=split,
        examples=[_example_out(r) for r in rows],
        next_after_id=rows[-1].id if len(rows) == limit else None,
    )
