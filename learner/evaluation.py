"""Probe evaluation: greedy answers to a bucket's probe examples, judged by its grader.

Results are stored as rows of the accuracy matrix (``evaluations``: version x bucket); the
learner reuses a stored score while the bucket's probe set is unchanged, so the reference
(active or base) model is evaluated once per probe set, not at every candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from sqlalchemy import Connection, insert, select
from transformers import PreTrainedTokenizerBase

from learner.graders import get_grader
from learner.modeling import GenerationParams, generate
from learner.store.models import Bucket, Evaluation, Example


@dataclass(frozen=True)
class ProbeSet:
    """A bucket's probe examples (at most ``limit``, the oldest first: a stable set)."""

    bucket_id: int
    bucket: str
    grader: str
    examples: tuple[tuple[str, str], ...]
    ids: tuple[int, ...] = ()

    def head(self, n: int) -> ProbeSet:
        """The first ``n`` probes (a smaller, still stable set)."""
        return ProbeSet(self.bucket_id, self.bucket, self.grader, self.examples[:n], self.ids[:n])


def load_probe_sets(conn: Connection, bucket_ids: Sequence[int], limit: int) -> list[ProbeSet]:
    sets = []
    for bucket in conn.execute(select(Bucket.__table__).where(Bucket.id.in_(bucket_ids))):
        rows = conn.execute(
            select(Example.id, Example.prompt, Example.target)
            .where(Example.bucket_id == bucket.id, Example.split == "probe")
            .order_by(Example.id)
            .limit(limit)
        ).all()
        if rows:
            examples = tuple((r.prompt, r.target) for r in rows)
            ids = tuple(r.id for r in rows)
            sets.append(ProbeSet(bucket.id, bucket.name, bucket.grader, examples, ids))
    return sets


def answers_correct(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[tuple[str, str]],
    grader: str,
    max_new_tokens: int,
    batch_size: int = 64,
) -> list[bool]:
    """Whether the model's greedy completion of each prompt is accepted by ``grader``."""
    if not examples:
        return []
    grade = get_grader(grader)
    longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for _, t in examples)
    params = GenerationParams(max_new_tokens=min(max_new_tokens, longest + 2))
    was_training = model.training
    model.eval()
    correct: list[bool] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        answers = generate(model, tokenizer, [p for p, _ in chunk], params)
        correct += [
            bool(grade(text, target)) for (text, _), (_, target) in zip(answers, chunk, strict=True)
        ]
    model.train(was_training)
    return correct


def stored_score(conn: Connection, version: int | None, probes: ProbeSet) -> float | None:
    """A stored score of ``version`` (None: base) on exactly this many probes, if any."""
    version_clause = (
        Evaluation.adapter_version.is_(None)
        if version is None
        else Evaluation.adapter_version == version
    )
    row = conn.execute(
        select(Evaluation.score)
        .where(version_clause, Evaluation.bucket_id == probes.bucket_id)
        .where(Evaluation.n == len(probes.examples))
        .order_by(Evaluation.id.desc())
        .limit(1)
    ).first()
    return None if row is None else float(row.score)


def store_score(
    conn: Connection, version: int | None, probes: ProbeSet, score: float, step: int
) -> None:
    conn.execute(
        insert(Evaluation).values(
            adapter_version=version,
            bucket_id=probes.bucket_id,
            score=score,
            n=len(probes.examples),
            at_step=step,
        )
    )
