"""Difficulty data: each ensemble member's answers, and the fitted IRT item parameters.

``difficulty_scores`` holds one row per (example, member): correct (0/1) and, for local
members, the mean token log-likelihood of the target. ``item_difficulty`` holds the newest
IRT fit per example. Callers own the transactions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from learner.store.models import Bucket, DifficultyScore, Example, ItemDifficulty


@dataclass(frozen=True)
class PendingExample:
    """An example some ensemble member has not answered yet."""

    id: int
    prompt: str
    target: str
    grader: str
    missing: tuple[str, ...]  # the members that still have to answer it


def pending_examples(
    conn: Connection, members: Sequence[str], after_id: int, limit: int
) -> list[PendingExample]:
    """The next ``limit`` examples (by id, after ``after_id``) missing a member's answer."""
    answered = (
        select(func.count())
        .where(DifficultyScore.example_id == Example.id, DifficultyScore.member.in_(members))
        .correlate(Example)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(Example.id, Example.prompt, Example.target, Bucket.grader)
        .join(Bucket, Bucket.id == Example.bucket_id)
        .where(Example.id > after_id, answered < len(members))
        .order_by(Example.id)
        .limit(limit)
    ).all()
    if not rows:
        return []
    done = conn.execute(
        select(DifficultyScore.example_id, DifficultyScore.member).where(
            DifficultyScore.example_id.in_([r.id for r in rows]),
            DifficultyScore.member.in_(members),
        )
    ).all()
    have = {(d.example_id, d.member) for d in done}
    return [
        PendingExample(
            r.id, r.prompt, r.target, r.grader, tuple(m for m in members if (r.id, m) not in have)
        )
        for r in rows
    ]


@dataclass(frozen=True)
class MemberAnswer:
    """One member's answer to one example."""

    example_id: int
    member: str
    correct: bool
    mean_logprob: float | None = None


def insert_answers(conn: Connection, answers: Sequence[MemberAnswer]) -> None:
    """Store answers; one already stored for the same (example, member) is kept."""
    if not answers:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(DifficultyScore).on_conflict_do_nothing(
            index_elements=["example_id", "member"]
        ),
        [
            {
                "example_id": a.example_id,
                "member": a.member,
                "correct": int(a.correct),
                "mean_logprob": a.mean_logprob,
            }
            for a in answers
        ],
    )


def count_answered(conn: Connection, members: Sequence[str]) -> int:
    """How many examples at least one of ``members`` has answered."""
    return int(
        conn.execute(
            select(func.count(func.distinct(DifficultyScore.example_id))).where(
                DifficultyScore.member.in_(members)
            )
        ).scalar_one()
    )


@dataclass(frozen=True)
class AnswerMatrix:
    """Members x items correctness: ``correct`` (M, N) in {0, 1}, ``mask`` (M, N) answered,
    ``mean_logprob`` (M, N) the target's mean token log-probability (NaN: not recorded)."""

    members: list[str]
    example_ids: np.ndarray  # (N,)
    correct: np.ndarray  # (M, N) float
    mask: np.ndarray  # (M, N) bool
    mean_logprob: np.ndarray  # (M, N) float


def answer_matrix(conn: Connection, members: Sequence[str]) -> AnswerMatrix:
    rows = conn.execute(
        select(
            DifficultyScore.example_id,
            DifficultyScore.member,
            DifficultyScore.correct,
            DifficultyScore.mean_logprob,
        ).where(DifficultyScore.member.in_(members), DifficultyScore.correct.is_not(None))
    ).all()
    ids = np.unique(np.fromiter((r.example_id for r in rows), dtype=np.int64, count=len(rows)))
    index = {m: i for i, m in enumerate(members)}
    correct = np.zeros((len(members), len(ids)))
    mask = np.zeros((len(members), len(ids)), dtype=bool)
    logprob = np.full((len(members), len(ids)), np.nan)
    if rows:
        cols = np.searchsorted(ids, [r.example_id for r in rows])
        member_rows = np.array([index[r.member] for r in rows])
        correct[member_rows, cols] = [r.correct for r in rows]
        mask[member_rows, cols] = True
        logprob[member_rows, cols] = [
            np.nan if r.mean_logprob is None else r.mean_logprob for r in rows
        ]
    return AnswerMatrix(list(members), ids, correct, mask, logprob)


def replace_item_fit(
    conn: Connection,
    example_ids: np.ndarray,
    b: np.ndarray,
    se_b: np.ndarray,
    a: np.ndarray | None,
    model: str,
) -> None:
    """Replace every stored item fit with this one (a fit covers all answered items)."""
    conn.execute(delete(ItemDifficulty))
    if len(example_ids) == 0:
        return
    discrimination = [None] * len(b) if a is None else [float(x) for x in a]
    conn.execute(
        insert(ItemDifficulty),
        [
            {
                "example_id": int(i),
                "difficulty": float(b_i),
                "std_error": float(se),
                "discrimination": a_i,
                "model": model,
            }
            for i, b_i, se, a_i in zip(example_ids, b, se_b, discrimination, strict=True)
        ],
    )


@dataclass(frozen=True)
class BucketDifficulty:
    """Mean IRT difficulty of a bucket's fitted items, with their count."""

    difficulty: float
    items: int


def bucket_difficulties(
    conn: Connection, bucket_id: int | None = None
) -> dict[int, BucketDifficulty]:
    """Bucket id -> mean fitted difficulty, for every bucket or just ``bucket_id``."""
    query = (
        select(Example.bucket_id, func.avg(ItemDifficulty.difficulty), func.count())
        .join(Example, Example.id == ItemDifficulty.example_id)
        .group_by(Example.bucket_id)
    )
    if bucket_id is not None:
        query = query.where(Example.bucket_id == bucket_id)
    rows = conn.execute(query)
    return {int(bid): BucketDifficulty(float(b), int(n)) for bid, b, n in rows}


def item_parameters(conn: Connection, example_ids: Sequence[int]) -> dict[int, tuple[float, float]]:
    """Example id -> (difficulty b, discrimination a; 1.0 for a 1PL fit) of fitted items."""
    if not example_ids:
        return {}
    rows = conn.execute(
        select(
            ItemDifficulty.example_id, ItemDifficulty.difficulty, ItemDifficulty.discrimination
        ).where(ItemDifficulty.example_id.in_(list(example_ids)))
    )
    return {int(i): (float(b), 1.0 if a is None else float(a)) for i, b, a in rows}


def group_by_grader(items: Sequence[PendingExample]) -> dict[str, list[PendingExample]]:
    """Examples by their bucket's grader (each member answers a grader's group together)."""
    groups: dict[str, list[PendingExample]] = defaultdict(list)
    for item in items:
        groups[item.grader].append(item)
    return groups
