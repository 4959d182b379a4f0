"""Sampling distribution, importance weights, quotas, new items and the cap (both backends)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import chisquare
from sqlalchemy import Engine

from learner.replay import ReplayStore

MakeStore = Callable[..., ReplayStore]  # fixtures of conftest.py
MakeExamples = Callable[..., list[dict[str, str]]]


def test_frequencies_follow_priorities(make_store: MakeStore, make_examples: MakeExamples) -> None:
    """50,000 draws over 20 items: frequencies match p^alpha / sum p^alpha (chi-square)."""
    store = make_store(alpha=0.6, seed=3)
    ids = np.array(store.add("a", make_examples("a", 20)))
    values = np.linspace(0.0, 4.0, 20)  # priorities eps ... 4 + eps: P spans 1:145
    store.update_priorities(ids, values)
    draws = np.concatenate([store.sample(250).ids for _ in range(200)])
    p = (values + store.config.eps) ** 0.6
    expected = p / p.sum() * draws.size
    observed = np.array([np.count_nonzero(draws == i) for i in ids])
    assert observed.sum() == draws.size
    assert chisquare(observed, expected).pvalue > 0.001


def test_mixed_frequencies_follow_reported_probabilities(
    make_store: MakeStore, make_examples: MakeExamples
) -> None:
    store = make_store(quota=0.5, seed=4)
    ids_a = store.add("a", make_examples("a", 5))
    ids_b = store.add("b", make_examples("b", 15))
    rng = np.random.default_rng(0)
    store.update_priorities(ids_a + ids_b, rng.random(20) * 3)
    all_ids, prob = store.probabilities(40)
    assert prob.sum() == pytest.approx(1.0)
    draws = np.concatenate([store.sample(40).ids for _ in range(1000)])
    observed = np.array([np.count_nonzero(draws == i) for i in all_ids])
    assert chisquare(observed, prob * draws.size).pvalue > 0.001


def expected_mixed(p: np.ndarray, bucket: np.ndarray, n: int, quota: float) -> np.ndarray:
    """P(i) of the quota mixture, written out independently of the implementation."""
    q = int(quota * n)
    buckets = np.unique(bucket)
    bucket_sum = {b: p[bucket == b].sum() for b in buckets}
    return np.array(
        [
            q / n / len(buckets) * pi / bucket_sum[b] + (n - q) / n * pi / p.sum()
            for pi, b in zip(p, bucket, strict=True)
        ]
    )


def test_weights_use_the_mixed_probability(
    make_store: MakeStore, make_examples: MakeExamples
) -> None:
    store = make_store(alpha=0.7, beta=0.4, beta_steps=10, quota=0.5, seed=5)
    ids = np.array(store.add("a", make_examples("a", 6)) + store.add("b", make_examples("b", 14)))
    bucket = np.array([0] * 6 + [1] * 14)
    values = np.random.default_rng(1).random(20) * 5
    store.update_priorities(ids, values)
    p = (values + store.config.eps) ** 0.7
    prob = expected_mixed(p, bucket, n=10, quota=0.5)
    assert np.allclose(store.probabilities(10)[1], prob[np.argsort(ids)], rtol=1e-12)
    index = {int(i): k for k, i in enumerate(ids)}  # add() returns ids in input order
    for step in range(3):
        batch = store.sample(10)
        beta = 0.4 + 0.6 * step / 10
        assert batch.beta == pytest.approx(beta)
        pos = np.array([index[i] for i in batch.ids.tolist()])
        assert np.allclose(batch.probabilities, prob[pos], rtol=1e-12)
        w = (20 * prob[pos]) ** -beta
        assert batch.weights.dtype == np.float32 and batch.ids.dtype == np.int64
        assert np.allclose(batch.weights, w / w.max(), rtol=1e-6)
    # One bucket: P(i) = p_i / S_b and N = the bucket's size; an explicit beta.
    batch = store.sample(10, bucket="b", beta=0.5)
    pos = np.array([index[i] for i in batch.ids.tolist()])
    assert np.all(pos >= 6)
    prob_b = p[pos] / p[6:].sum()
    w = (14 * prob_b) ** -0.5
    assert np.allclose(batch.probabilities, prob_b, rtol=1e-12)
    assert np.allclose(batch.weights, w / w.max(), rtol=1e-6)
    assert all(ex.bucket == "b" for ex in batch.examples)


def test_new_items_enter_at_max_priority(
    engine: Engine, make_store: MakeStore, make_examples: MakeExamples
) -> None:
    store = make_store()
    ids = store.add("a", make_examples("a", 10))
    store.update_priorities(ids, np.linspace(0.1, 3.0, 10))
    [new_id] = store.add("a", make_examples("a", 1, tag="new"))
    all_ids, prob = store.probabilities(1)
    by_id = dict(zip(all_ids.tolist(), prob.tolist(), strict=True))
    assert by_id[new_id] == pytest.approx(by_id[ids[-1]])  # the item at 3.0 + eps
    store.flush()
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT priority, times_sampled, last_loss FROM replay_state "
            f"WHERE example_id = {new_id}"
        ).one()
    assert tuple(row) == (pytest.approx(3.0 + store.config.eps), 0, None)


def test_quota_keeps_an_old_low_priority_bucket_sampled(
    make_store: MakeStore, make_examples: MakeExamples
) -> None:
    store = make_store(quota=0.5, seed=6)
    old = store.add("old", make_examples("old", 200))
    new = store.add("new", make_examples("new", 200))
    store.update_priorities(old, np.zeros(200))  # learned: priority eps
    store.update_priorities(new, np.full(200, 100.0))
    for _ in range(50):
        batch = store.sample(64)
        from_old = sum(ex.bucket == "old" for ex in batch.examples)
        assert from_old >= 16  # q = 32 quota draws, 16 per bucket
    store.flush()
    starving = make_store(quota=0.0, seed=6)  # rebuilt from SQL
    batch = starving.sample(64)
    assert sum(ex.bucket == "old" for ex in batch.examples) <= 1


def test_cap_evicts_oldest_but_sql_keeps_everything(
    engine: Engine, make_store: MakeStore, make_examples: MakeExamples
) -> None:
    store = make_store(max_per_bucket=30, seed=7)
    examples = make_examples("a", 100)
    first = store.add("a", examples[:70])
    later = store.add("a", examples[70:])
    other = store.add("b", make_examples("b", 5))
    ids = first + later
    assert len(store) == 35 and store.bucket_sizes() == {"a": 30, "b": 5}
    kept = set(ids[-30:])
    sampled = np.concatenate([store.sample(64, bucket="a").ids for _ in range(20)])
    assert set(sampled.tolist()) == kept
    assert set(store.probabilities(8)[0].tolist()) == kept | set(other)
    store.update_priorities([ids[0]], [2.5])  # evicted: SQL still records it
    store.flush()
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT count(*) FROM examples WHERE split = 'train'")
        assert stored.scalar_one() == 105
        row = conn.exec_driver_sql(
            f"SELECT priority, times_sampled FROM replay_state WHERE example_id = {ids[0]}"
        ).one()
    assert tuple(row) == (pytest.approx(2.5 + store.config.eps), 1)
    rebuilt = make_store(max_per_bucket=30)  # the same newest 30 after a rebuild
    assert set(rebuilt.probabilities(8)[0].tolist()) == kept | set(other)


def test_probes_are_never_sampled(
    engine: Engine, make_store: MakeStore, make_examples: MakeExamples
) -> None:
    store = make_store(seed=8)
    train = store.add("a", make_examples("a", 30))
    probes = store.add("a", make_examples("a", 10, split="probe"))
    assert len(store) == 30
    sampled = np.concatenate([store.sample(64).ids for _ in range(30)])
    assert set(sampled.tolist()) == set(train)
    assert not set(store.probabilities(1)[0].tolist()) & set(probes)
    with pytest.raises(KeyError):
        store.update_priorities(probes[:1], [1.0])
    rebuilt = make_store()
    assert set(rebuilt.probabilities(1)[0].tolist()) == set(train)


def test_excluded_bucket_leaves_draws_and_comes_back_with_its_priorities(
    make_store: MakeStore, make_examples: MakeExamples
) -> None:
    """A quarantined bucket is never drawn; released, it is drawn again at the priorities
    it had stored (not at the entry priority of new examples)."""
    store = make_store(seed=5)
    ids_a = store.add("a", make_examples("a", 10))
    ids_b = store.add("b", make_examples("b", 10))
    store.update_priorities(ids_a + ids_b, np.r_[np.full(10, 0.5), np.full(10, 2.0)])
    store.flush()
    assert store.exclude_bucket("b") == 10
    drawn = np.concatenate([store.sample(16).ids for _ in range(50)])
    assert set(drawn.tolist()) <= set(ids_a)
    assert store.include_bucket("b") == 10
    assert store.include_bucket("b") == 0  # not excluded any more
    ids, prob = store.probabilities(20)
    by_id = dict(zip(ids.tolist(), prob.tolist(), strict=True))
    # b's stored priority (2 + eps) is 4x a's (0.5 + eps): its draw probability is larger.
    assert min(by_id[i] for i in ids_b) > max(by_id[i] for i in ids_a)
