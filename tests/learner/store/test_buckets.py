"""Bucket summaries: the bucket's columns, its example counts and latest probe accuracy."""

from __future__ import annotations

from sqlalchemy import Engine, insert

from learner.store.buckets import get_bucket, list_buckets
from learner.store.db import write_transaction
from learner.store.ingest import NewExample, ingest_batch
from learner.store.models import Bucket, Evaluation


def test_summaries_count_examples_and_show_the_latest_evaluation(engine: Engine) -> None:
    examples = [NewExample(f"q{i} =", str(i)) for i in range(40)]
    with write_transaction(engine) as conn:
        ingest_batch(conn, "full", examples, kind="alignment", grader="numeric")
        conn.execute(insert(Bucket).values(name="empty"))
        full = get_bucket(conn, "full")
        assert full is not None
        conn.execute(
            insert(Evaluation),
            [
                {"bucket_id": full.id, "score": 0.25, "n": 4, "at_step": 10},
                {"bucket_id": full.id, "score": 0.75, "n": 4, "at_step": 20},
            ],
        )
    with engine.connect() as conn:
        summaries = list_buckets(conn)
        assert get_bucket(conn, "missing") is None
    assert [s.name for s in summaries] == ["full", "empty"]
    full, empty = summaries
    assert (full.kind, full.grader, full.status) == ("alignment", "numeric", "active")
    assert full.train_examples + full.probe_examples == 40 and full.probe_examples > 0
    assert (full.probe_accuracy, full.probe_accuracy_step) == (0.75, 20)
    assert (empty.kind, empty.grader, empty.train_examples, empty.probe_examples) == (
        "task",
        "exact",
        0,
        0,
    )
    assert (empty.probe_accuracy, empty.probe_accuracy_step) == (None, None)
    for summary in summaries:
        assert type(summary.train_examples) is int and type(summary.probe_examples) is int
        assert summary.created_at is not None
