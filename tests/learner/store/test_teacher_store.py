"""Teacher decisions, snapshots and the difficulty tables, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
from sqlalchemy import Engine, func, select

from learner.store.db import write_transaction
from learner.store.difficulty import (
    MemberAnswer,
    answer_matrix,
    bucket_difficulties,
    count_answered,
    insert_answers,
    item_parameters,
    pending_examples,
    replace_item_fit,
)
from learner.store.ingest import NewExample, ingest_batch
from learner.store.models import Bucket, Example, TeacherState
from learner.store.teacher import (
    DecisionRecord,
    focus_rounds,
    latest_snapshot,
    recent_decisions,
    record_decision,
    save_snapshot,
    teacher_view,
)

MEMBERS = ["weak", "strong"]


def seed_buckets(engine: Engine) -> dict[str, list[int]]:
    with write_transaction(engine) as conn:
        for name, n in (("a", 6), ("b", 4)):
            examples = [NewExample(f"{name} prompt {i}", f"t{i}") for i in range(n)]
            ingest_batch(conn, name, examples, grader="exact")
        rows = conn.execute(
            select(Bucket.name, Example.id).join(Example).order_by(Example.id)
        ).all()
    ids: dict[str, list[int]] = {"a": [], "b": []}
    for name, example_id in rows:
        ids[name].append(example_id)
    return ids


def decision(bucket_id: int, step: int, scores: dict[str, float]) -> DecisionRecord:
    return DecisionRecord(step, bucket_id, "lp_zpd", scores, f"why {step}", 10, 0.5, 1.2, 0.1)


def test_decisions_snapshots_and_view(engine: Engine) -> None:
    seed_buckets(engine)
    with engine.connect() as conn:
        bucket_ids = {n: i for n, i in conn.execute(select(Bucket.name, Bucket.id))}
    with write_transaction(engine) as conn:
        record_decision(conn, decision(bucket_ids["a"], 0, {"a": 1.2, "b": 1.1}))
        record_decision(conn, decision(bucket_ids["a"], 10, {"a": 0.3, "b": 0.2}))
        record_decision(conn, decision(bucket_ids["b"], 20, {"a": 0.1, "b": 0.4}))
        for step in range(5):
            save_snapshot(conn, step, "lp_zpd", {"learner_ability": step / 10}, keep=3)
    with engine.connect() as conn:
        newest = recent_decisions(conn, 2)
        assert [d.step for d in newest] == [20, 10]
        assert newest[0].bucket == "b" and newest[0].scores == {"a": 0.1, "b": 0.4}
        assert newest[0].reward == 0.1 and newest[0].reason == "why 20"
        assert focus_rounds(conn) == {bucket_ids["a"]: 2, bucket_ids["b"]: 1}
        snapshot = latest_snapshot(conn)
        assert snapshot is not None and snapshot.step == 4
        assert conn.execute(select(func.count()).select_from(TeacherState)).scalar_one() == 3
        view = teacher_view(conn)
    assert view.ability == 0.4 and view.arm_scores == {"a": 0.1, "b": 0.4}


def test_empty_teacher_view(engine: Engine) -> None:
    with engine.connect() as conn:
        view = teacher_view(conn)
        assert latest_snapshot(conn) is None and recent_decisions(conn, 5) == []
    assert view.ability is None and view.arm_scores == {} and view.focus_rounds == {}


def test_pending_answers_and_matrix(engine: Engine) -> None:
    ids = seed_buckets(engine)
    all_ids = ids["a"] + ids["b"]
    with engine.connect() as conn:
        pending = pending_examples(conn, MEMBERS, 0, 100)
    assert [p.id for p in pending] == all_ids
    assert all(p.missing == tuple(MEMBERS) and p.grader == "exact" for p in pending)

    first = [MemberAnswer(i, "weak", i % 2 == 0) for i in all_ids]
    with write_transaction(engine) as conn:
        insert_answers(conn, first)
        insert_answers(conn, first[:3])  # a repeat is kept as it was, not an error
    with engine.connect() as conn:
        pending = pending_examples(conn, MEMBERS, 0, 3)
        assert [p.id for p in pending] == all_ids[:3]
        assert all(p.missing == ("strong",) for p in pending)
        assert pending_examples(conn, MEMBERS, all_ids[-2], 100)[0].id == all_ids[-1]
    with write_transaction(engine) as conn:
        insert_answers(conn, [MemberAnswer(i, "strong", True, -0.5) for i in all_ids[:-1]])
    with engine.connect() as conn:
        assert [p.id for p in pending_examples(conn, MEMBERS, 0, 100)] == [all_ids[-1]]
        assert count_answered(conn, MEMBERS) == len(all_ids)
        matrix = answer_matrix(conn, MEMBERS)
    assert matrix.example_ids.tolist() == all_ids
    assert matrix.mask[0].all() and matrix.mask[1].tolist() == [True] * 9 + [False]
    assert matrix.correct[0].tolist() == [float(i % 2 == 0) for i in all_ids]


def test_item_fit_and_bucket_difficulty(engine: Engine) -> None:
    ids = seed_buckets(engine)
    all_ids = np.array(ids["a"] + ids["b"])
    b = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, -1.0, -1.0, -2.0, -2.0])
    with write_transaction(engine) as conn:
        replace_item_fit(conn, all_ids, b + 100, np.ones(10), None, "1pl")
        replace_item_fit(conn, all_ids, b, np.full(10, 0.3), np.full(10, 2.0), "2pl")
    with engine.connect() as conn:
        by_bucket = bucket_difficulties(conn)
        bucket_ids = {n: i for n, i in conn.execute(select(Bucket.name, Bucket.id))}
        params = item_parameters(conn, [int(all_ids[0]), int(all_ids[-1]), 10**9])
    assert by_bucket[bucket_ids["a"]].difficulty == 2.5 and by_bucket[bucket_ids["a"]].items == 6
    assert by_bucket[bucket_ids["b"]].difficulty == -1.5
    assert params == {int(all_ids[0]): (0.0, 2.0), int(all_ids[-1]): (-2.0, 2.0)}
