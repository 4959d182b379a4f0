"""SQL as the source of truth: other writers, restarts, SIGKILL, write-behind (both backends)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from learner.replay import ReplayConfig, ReplayStore
from learner.store.db import make_engine, write_transaction
from learner.store.ingest import NewExample, ingest_batch

REPO_ROOT = Path(__file__).resolve().parents[3]

MakeStore = Callable[..., ReplayStore]  # fixtures of conftest.py
MakeExamples = Callable[..., list[dict[str, str]]]


def ingest_elsewhere(db_url: str, bucket: str, examples: list[dict]) -> None:
    """Insert through another engine (another connection pool), as the server would."""
    other = make_engine(db_url)
    try:
        with write_transaction(other) as conn:
            ingest_batch(conn, bucket, [NewExample(e["prompt"], e["target"]) for e in examples])
    finally:
        other.dispose()


def run_child(script: str, db_url: str, timeout: float = 60.0) -> subprocess.Popen[str]:
    env = {**os.environ, "DB_URL": db_url, "PYTHONPATH": str(REPO_ROOT)}
    code = "import os, sys, json, numpy as np\nfrom learner.replay import ReplayStore\n"
    return subprocess.Popen(
        [sys.executable, "-c", code + textwrap.dedent(script)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,  # open and silent: input() in a child blocks until it is killed
        stdout=subprocess.PIPE,
        text=True,
    )


def replay_rows(engine: Engine) -> np.ndarray:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT example_id, priority, last_loss, times_sampled FROM replay_state "
            "ORDER BY example_id"
        ).all()
    return np.array(rows, dtype=np.float64)


def test_examples_of_another_process_are_sampleable_within_a_second(
    db_url: str, make_store: MakeStore, make_examples: MakeExamples
) -> None:
    store = make_store(refresh_interval=0.5)
    [first] = store.add("a", make_examples("a", 1))
    store.sample(4)
    ingest_elsewhere(db_url, "a", make_examples("a", 1, tag="late"))
    committed = time.monotonic()
    while True:
        batch = store.sample(64)  # two items at the same (max) priority
        if len(set(batch.ids.tolist()) - {first}):
            break
        assert time.monotonic() - committed < 1.0, "not sampleable after 1 s"
        time.sleep(0.01)
    assert {ex.prompt for ex in batch.examples} >= {"late0: what is 0 + 0?"}


def test_late_commits_with_smaller_ids_are_found(
    backend: str, db_url: str, engine: Engine, make_store: MakeStore, make_examples: MakeExamples
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers: ids are handed out in commit order")
    store = make_store()
    store.add("a", make_examples("a", 1))
    slow = NewExample(**make_examples("a", 1, tag="slow")[0])
    with write_transaction(engine) as conn:
        ingest_batch(conn, "a", [slow])  # takes the smaller id, commits last
        ingest_elsewhere(db_url, "a", make_examples("a", 1, tag="fast"))
        assert store.refresh() == 1
    assert store.refresh() == 1
    assert len(store) == 3


def test_restart_in_a_new_process_gives_the_same_distribution(
    db_url: str, make_store: MakeStore, make_examples: MakeExamples
) -> None:
    store = make_store(quota=0.5, seed=9)
    ids = store.add("a", make_examples("a", 30)) + store.add("b", make_examples("b", 10))
    for _ in range(5):
        batch = store.sample(16)
        store.update_priorities(batch.ids, np.random.default_rng(0).random(16) * 4)
    store.update_priorities(ids[:3], [9.0, 0.0, 2.0])
    store.flush()
    mine = {
        "mixed": store.probabilities(16),
        "b": store.probabilities(16, bucket="b"),
    }
    child = run_child(
        """
        store = ReplayStore(os.environ["DB_URL"], quota=0.5)
        out = {k: [a.tolist() for a in store.probabilities(16, bucket=b)]
               for k, b in (("mixed", None), ("b", "b"))}
        print(json.dumps(out))
        store.close()
        """,
        db_url,
    )
    stdout, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    theirs = json.loads(stdout)
    for key, (ids_, prob) in mine.items():
        assert theirs[key][0] == ids_.tolist()
        assert np.allclose(theirs[key][1], prob, rtol=1e-9)


def test_sigkill_without_flush_keeps_exactly_the_flushed_updates(
    engine: Engine, db_url: str, make_store: MakeStore, make_examples: MakeExamples
) -> None:
    make_store().add("a", make_examples("a", 50))
    child = run_child(
        """
        store = ReplayStore(os.environ["DB_URL"], flush_interval=3600)
        ids = store.probabilities(1)[0]
        for r in range(1, 9):  # flush after rounds 3 and 6; round 7 and 8 stay queued
            store.update_priorities(ids, np.full(ids.size, float(r)))
            if r % 3 == 0:
                store.flush()
        print("ready", flush=True)
        input()
        """,
        db_url,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    assert child.poll() is None, "the child must still be running when it is killed"
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    rows = replay_rows(engine)
    assert rows.shape[0] == 50
    eps = ReplayConfig().eps
    assert np.all(rows[:, 1] == 6 + eps) and np.all(rows[:, 2] == 6) and np.all(rows[:, 3] == 6)


def test_sigkill_during_background_flushes_leaves_one_consistent_round(
    backend: str, engine: Engine, db_url: str, make_store: MakeStore, make_examples: MakeExamples
) -> None:
    make_store().add("a", make_examples("a", 200))
    child = run_child(
        """
        store = ReplayStore(os.environ["DB_URL"], flush_interval=0.005)
        ids = store.probabilities(1)[0]
        r = 0
        while True:
            r += 1
            store.update_priorities(ids, np.full(ids.size, float(r)))
            if r % 20 == 0:
                store.flush()
                print(f"flushed {r}", flush=True)
        """,
        db_url,
    )
    assert child.stdout is not None
    while child.stdout.readline().strip() != "flushed 100":
        pass
    time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    rows = replay_rows(engine)
    last_round = rows[0, 3]
    assert last_round >= 100
    # Every row is at the same round: a flush is one transaction, all or nothing.
    eps = ReplayConfig().eps
    assert np.all(rows[:, 3] == last_round) and np.all(rows[:, 2] == last_round)
    assert np.allclose(rows[:, 1], last_round + eps)
    if backend == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
    with ReplayStore(engine) as reopened:
        assert len(reopened) == 200 and reopened.sample(8).ids.size == 8


def test_write_behind_reaches_sql_within_the_flush_interval(
    engine: Engine, make_store: MakeStore, make_examples: MakeExamples
) -> None:
    store = make_store(flush_interval=0.2)
    ids = store.add("a", make_examples("a", 5))
    store.flush()
    store.update_priorities(ids[:2], [1.5, 2.5])
    store.update_priorities(ids[:1], [0.5])  # the last value wins, both count
    assert store._writer.pending == 3
    deadline = time.monotonic() + 2.0
    while replay_rows(engine)[:, 3].sum() < 3:
        assert time.monotonic() < deadline, "updates not written within 2 s"
        time.sleep(0.05)
    rows = {int(r[0]): r[1:] for r in replay_rows(engine)}
    eps = store.config.eps
    assert list(rows[ids[0]]) == [0.5 + eps, 0.5, 2]
    assert list(rows[ids[1]]) == [2.5 + eps, 2.5, 1]


def test_rebuild_gives_never_seen_examples_an_entry_row(
    db_url: str, engine: Engine, make_store: MakeStore, make_examples: MakeExamples
) -> None:
    ingest_elsewhere(db_url, "a", make_examples("a", 8))
    store = make_store()  # flushes every 0.05 s; the backfill needs no sampling
    assert len(store) == 8
    deadline = time.monotonic() + 2.0
    while replay_rows(engine).shape[0] < 8:
        assert time.monotonic() < deadline, "entry rows not written within 2 s"
        time.sleep(0.02)
    rows = replay_rows(engine)
    assert np.all(rows[:, 1] == 1.0) and np.all(rows[:, 3] == 0)


def test_state_dict_reproduces_the_sample_sequence(
    make_store: MakeStore, make_examples: MakeExamples
) -> None:
    store = make_store(seed=11, beta_steps=100)
    store.add("a", make_examples("a", 30))
    store.sample(8)
    state = json.loads(json.dumps(store.state_dict()))  # plain JSON-able data
    expected = [store.sample(8) for _ in range(3)]
    other = make_store(seed=0, beta_steps=100)
    other.load_state_dict(state)
    for batch in expected:
        again = other.sample(8)
        assert np.array_equal(again.ids, batch.ids) and again.beta == batch.beta


def test_add_returns_ids_of_duplicates_and_deleted_examples_are_dropped(
    engine: Engine, make_store: MakeStore, make_examples: MakeExamples
) -> None:
    store = make_store()
    examples = make_examples("a", 6)
    ids = store.add("a", examples)
    assert store.add("a", examples[2:4] + examples[:1]) == ids[2:4] + ids[:1]
    with write_transaction(engine) as conn:
        conn.exec_driver_sql(f"DELETE FROM examples WHERE id IN ({ids[0]}, {ids[1]})")
    sampled = np.concatenate([store.sample(32).ids for _ in range(5)])
    assert set(sampled.tolist()) <= set(ids[2:]) and len(store) == 4
    store.update_priorities(ids[2:], [1.0] * 4)
    store.flush()


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="alpha"):
        ReplayConfig(alpha=-1)
    with pytest.raises(ValueError, match="quota"):
        ReplayConfig(quota=1.5)
    with pytest.raises(ValueError, match="block_size"):
        ReplayConfig(block_size=100)
    with pytest.raises(TypeError):
        ReplayConfig(unknown=1)  # type: ignore[call-arg]


def test_backfill_runs_in_chunks_and_never_overwrites_updates(
    db_url: str,
    engine: Engine,
    make_store: MakeStore,
    make_examples: MakeExamples,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("learner.replay.writer.BACKFILL_CHUNK", 4)
    ingest_elsewhere(db_url, "a", make_examples("a", 12))
    store = make_store(flush_interval=3600)
    ids = store.probabilities(1)[0]
    store.update_priorities(ids[-1:], [5.0])
    store._writer._flush(backfill_chunks=1)  # what one background flush does
    assert 0 < replay_rows(engine).shape[0] < 12
    store.flush()  # everything
    rows = {int(r[0]): r[1:] for r in replay_rows(engine)}
    assert sorted(rows) == ids.tolist()
    assert list(rows[int(ids[-1])]) == [5.0 + store.config.eps, 5.0, 1]
    assert all(rows[int(i)][0] == 1.0 for i in ids[:-1])
    with pytest.raises(ValueError, match="no train examples"):
        store.sample(4, bucket="nope")
