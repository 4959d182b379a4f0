"""The builtin suites: alignment and foundation buckets, created once, kept as anchors."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from learner.builtin.families import FOUNDATION_MIX
from learner.builtin.suites import (
    ensure_alignment_suite,
    foundation_bucket,
    foundation_skills,
    suite_buckets,
)
from learner.store.models import Bucket, Example


def _buckets(engine: Engine) -> dict[str, tuple[str, str, int, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Bucket.name, Bucket.kind, Bucket.grader, Example.split, func.count())
            .join(Example, Example.bucket_id == Bucket.id)
            .group_by(Bucket.name, Bucket.kind, Bucket.grader, Example.split)
        ).all()
    out: dict[str, tuple[str, str, int, int]] = {}
    for name, kind, grader, split, n in rows:
        _, _, probes, train = out.get(name, (kind, grader, 0, 0))
        out[name] = (kind, grader, probes + n * (split == "probe"), train + n * (split == "train"))
    return out


def test_the_suites_cover_every_bootstrap_skill_once(engine: Engine) -> None:
    created = ensure_alignment_suite(engine)
    foundation = [foundation_bucket(f, level) for f, level in foundation_skills()]
    assert created == suite_buckets() + foundation
    assert {f for f, _ in foundation_skills()} == {f for f, _, _ in FOUNDATION_MIX} - {"alignment"}
    buckets = _buckets(engine)
    for name in created:
        kind, _, probes, train = buckets[name]
        assert kind == "alignment" and probes >= 10 and train >= 10, (name, buckets[name])
    assert buckets["foundation-addition-l1"][1] == "numeric"
    assert ensure_alignment_suite(engine) == []  # once only


def test_the_foundation_suite_can_be_left_out(engine: Engine) -> None:
    assert ensure_alignment_suite(engine, foundation=False) == suite_buckets()
    assert set(_buckets(engine)) == set(suite_buckets())
