"""Read access to buckets and their examples (counts, latest probe accuracy)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Subquery, case, func, select

from learner.store.models import Bucket, Evaluation, Example


@dataclass(frozen=True)
class BucketSummary:
    """A bucket with its example counts and latest probe accuracy."""

    id: int
    name: str
    kind: str
    format: str
    grader: str
    status: str
    created_at: datetime
    train_examples: int
    probe_examples: int
    probe_accuracy: float | None
    probe_accuracy_step: int | None


def _counts_query() -> Subquery:
    is_probe = case((Example.split == "probe", 1), else_=0)
    return (
        select(
            Example.bucket_id,
            func.count().label("total"),
            func.sum(is_probe).label("probes"),
        )
        .group_by(Example.bucket_id)
        .subquery()
    )


def _latest_eval_query() -> Subquery:
    newest = (
        select(Evaluation.bucket_id, func.max(Evaluation.id).label("eval_id"))
        .group_by(Evaluation.bucket_id)
        .subquery()
    )
    return (
        select(Evaluation.bucket_id, Evaluation.score, Evaluation.at_step)
        .join(newest, newest.c.eval_id == Evaluation.id)
        .subquery()
    )


def list_buckets(conn: Connection, name: str | None = None) -> list[BucketSummary]:
    counts = _counts_query()
    latest = _latest_eval_query()
    total = func.coalesce(counts.c.total, 0)
    probes = func.coalesce(counts.c.probes, 0)
    # Every column is labelled as a field of BucketSummary, so a row is one summary; the
    # bucket's own columns are its first fields.
    query = (
        select(
            Bucket.__table__,
            (total - probes).label("train_examples"),
            probes.label("probe_examples"),
            latest.c.score.label("probe_accuracy"),
            latest.c.at_step.label("probe_accuracy_step"),
        )
        .outerjoin(counts, counts.c.bucket_id == Bucket.id)
        .outerjoin(latest, latest.c.bucket_id == Bucket.id)
        .order_by(Bucket.id)
    )
    if name is not None:
        query = query.where(Bucket.name == name)
    return [BucketSummary(**row._mapping) for row in conn.execute(query)]


def get_bucket(conn: Connection, name: str) -> BucketSummary | None:
    found = list_buckets(conn, name)
    return found[0] if found else None


def list_examples(
    conn: Connection, bucket_id: int, split: str | None, limit: int, after_id: int = 0
) -> list[Example]:
    """A page of a bucket's examples in id order (keyset pagination with ``after_id``)."""
    query = (
        select(Example.__table__)
        .where(Example.bucket_id == bucket_id, Example.id > after_id)
        .order_by(Example.id)
        .limit(limit)
    )
    if split is not None:
        query = query.where(Example.split == split)
    return [Example(**row._mapping) for row in conn.execute(query)]


def count_examples(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(Example)).scalar_one()


@dataclass(frozen=True)
class BucketInfo:
    """What the learner needs to know of a bucket besides its examples."""

    id: int
    name: str
    kind: str
    status: str


def bucket_catalog(conn: Connection) -> dict[str, BucketInfo]:
    """Every bucket by name (the learner's view of them, read once per round)."""
    rows = conn.execute(select(Bucket.id, Bucket.name, Bucket.kind, Bucket.status))
    return {r.name: BucketInfo(r.id, r.name, r.kind, r.status) for r in rows}


def bucket_names(conn: Connection) -> set[str]:
    return set(conn.execute(select(Bucket.name)).scalars())


def bucket_ids_of_kind(conn: Connection, kind: str) -> list[int]:
    query = select(Bucket.id).where(Bucket.kind == kind).order_by(Bucket.id)
    return list(conn.execute(query).scalars())
