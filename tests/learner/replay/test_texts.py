"""The text cache: compact, bounded, and the same batches as reading the texts from SQL."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import Engine

from learner.replay.texts import TextCache
from tests.learner.replay.conftest import MakeExamples, MakeStore


def test_cache_returns_what_was_put_and_reports_misses() -> None:
    cache = TextCache(1 << 20)
    assert cache.put([3, 7], [1, 2], ["p3 ünï", "p7"], ["t3", ""]) == 2
    texts, misses = cache.get(np.array([7, 3, 5, 7, 10_000]))
    assert texts == [(2, "p7", ""), (1, "p3 ünï", "t3"), None, (2, "p7", ""), None]
    assert misses.tolist() == [5, 10_000]
    assert len(cache) == 2
    # Examples never change: a second put of a held id keeps the first texts.
    assert cache.put([3], [9], ["other"], ["other"]) == 0
    assert cache.get(np.array([3]))[0] == [(1, "p3 ünï", "t3")]


def test_cache_stops_taking_examples_at_its_bound() -> None:
    cache = TextCache(1024 * 20 + 50)  # the id arrays of 1024 ids + 50 bytes of text
    taken = cache.put(list(range(10)), [0] * 10, ["x" * 8] * 10, ["y" * 2] * 10)
    assert taken == 5 and cache.full
    assert cache.nbytes <= cache.max_bytes
    assert cache.put([20], [0], ["a"], ["b"]) == 0
    off = TextCache(0)
    assert off.full and off.put([1], [0], ["a"], ["b"]) == 0
    with pytest.raises(ValueError):
        TextCache(-1)


def test_store_draws_from_the_cache_and_matches_sql(
    engine: Engine, make_store: MakeStore, make_examples: MakeExamples
) -> None:
    seed_store = make_store()
    seed_store.add("a", make_examples("a", 40))
    seed_store.add("b", make_examples("b", 25, tag="b"))
    seed_store.close()
    cached = make_store(seed=5)  # rebuilt: the texts are loaded with the index
    uncached = make_store(seed=5, text_cache_bytes=0)
    assert len(cached._texts) == len(cached) == 65 and len(uncached._texts) == 0
    reads = []
    for _ in range(5):
        a, b = cached.sample(16), uncached.sample(16)
        assert np.array_equal(a.ids, b.ids)
        assert a.examples == b.examples
        reads.append(a)
    assert {e.bucket for batch in reads for e in batch.examples} == {"a", "b"}


def test_new_examples_are_read_once_then_cached(
    engine: Engine, make_store: MakeStore, make_examples: MakeExamples
) -> None:
    store = make_store(seed=1)
    store.add("a", make_examples("a", 30))
    assert len(store._texts) == 0  # arrived after the rebuild
    first = store.sample(64)
    assert len(store._texts) == len(set(first.ids.tolist()))
    assert all(e.bucket == "a" and e.prompt.startswith("q") for e in first.examples)
