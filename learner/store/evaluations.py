"""Per-probe evaluation results and the accuracy matrix cells derived from them.

Thin data access over a caller's connection; the caller owns the transaction. A probe
result is stored once per (version, example): a version's weights never change and
answers are greedy, so a stored answer is reused whenever that version is a reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Integer, cast, func, insert, select

from learner.store.models import ANSWER_CHARS, Bucket, Evaluation, ProbeResult, storable


@dataclass(frozen=True)
class StoredAnswer:
    correct: bool
    answer: str


def _version_is(column: Any, version: int | None) -> Any:
    return column.is_(None) if version is None else column == version


def stored_answers(
    conn: Connection, version: int | None, example_ids: Sequence[int]
) -> dict[int, StoredAnswer]:
    """The stored answers of ``version`` (None: base) to these probes, by example id."""
    if not example_ids:
        return {}
    rows = conn.execute(
        select(ProbeResult.example_id, ProbeResult.correct, ProbeResult.answer)
        .where(_version_is(ProbeResult.adapter_version, version))
        .where(ProbeResult.example_id.in_(list(example_ids)))
        .order_by(ProbeResult.id)
    )
    return {r.example_id: StoredAnswer(bool(r.correct), r.answer) for r in rows}


def version_correct(conn: Connection, version: int | None) -> dict[int, bool]:
    """example id -> whether the version answered it correctly, over every stored probe."""
    rows = conn.execute(
        select(ProbeResult.example_id, ProbeResult.correct)
        .where(_version_is(ProbeResult.adapter_version, version))
        .order_by(ProbeResult.id)
    )
    return {r.example_id: bool(r.correct) for r in rows}


def answers_by_version(
    conn: Connection, versions: Iterable[int | None], example_ids: Sequence[int]
) -> dict[int | None, dict[int, bool]]:
    """Correctness of each given version's stored answers to these probes."""
    out: dict[int | None, dict[int, bool]] = {}
    for version in versions:
        stored = stored_answers(conn, version, example_ids)
        out[version] = {i: a.correct for i, a in stored.items()}
    return out


def record_results(
    conn: Connection,
    version: int | None,
    bucket_id: int,
    answers: Sequence[tuple[int, bool, str]],
    step: int,
) -> None:
    """Store (example id, correct, answer) rows of one version on one bucket's probes, and
    the bucket's accuracy-matrix cell over every probe of it that this version answered.
    Answers already stored for this version are not stored twice."""
    known = stored_answers(conn, version, [eid for eid, _, _ in answers])
    new = [a for a in answers if a[0] not in known]
    if new:
        conn.execute(
            insert(ProbeResult),
            [
                {
                    "adapter_version": version,
                    "example_id": eid,
                    "bucket_id": bucket_id,
                    "correct": correct,
                    "answer": storable(text)[:ANSWER_CHARS],
                    "at_step": step,
                }
                for eid, correct, text in new
            ],
        )
    n, right = conn.execute(
        select(func.count(), func.coalesce(func.sum(_as_int(ProbeResult.correct)), 0)).where(
            _version_is(ProbeResult.adapter_version, version), ProbeResult.bucket_id == bucket_id
        )
    ).one()
    if n:
        conn.execute(
            insert(Evaluation).values(
                adapter_version=version,
                bucket_id=bucket_id,
                score=float(right) / n,
                n=int(n),
                at_step=step,
            )
        )


def _as_int(column: Any) -> Any:
    return cast(column, Integer)


def evaluated_bucket_ids(conn: Connection, version: int | None) -> list[int]:
    """Buckets that ``version`` (None: base) has answered probes of."""
    rows = conn.execute(
        select(ProbeResult.bucket_id)
        .where(_version_is(ProbeResult.adapter_version, version))
        .distinct()
    )
    return sorted(r.bucket_id for r in rows)


def matrix_cells(conn: Connection) -> dict[int | None, dict[str, tuple[float, int]]]:
    """The accuracy matrix from the per-probe rows: version -> bucket -> (accuracy, n)."""
    rows = conn.execute(
        select(
            ProbeResult.adapter_version,
            Bucket.name,
            func.count(),
            func.sum(_as_int(ProbeResult.correct)),
        )
        .join(Bucket, Bucket.id == ProbeResult.bucket_id)
        .group_by(ProbeResult.adapter_version, Bucket.name)
    )
    cells: dict[int | None, dict[str, tuple[float, int]]] = {}
    for version, bucket, n, right in rows:
        cells.setdefault(version, {})[bucket] = (float(right) / n, int(n))
    return cells
