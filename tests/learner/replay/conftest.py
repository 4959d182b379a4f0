"""Fixtures of the replay tests: stores that are closed afterwards, examples of one split."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from learner.replay import ReplayStore
from learner.store.ingest import content_hash, split_for_hash

MakeStore = Callable[..., ReplayStore]
MakeExamples = Callable[..., list[dict[str, str]]]


def examples_of_split(bucket: str, n: int, split: str = "train", tag: str = "q") -> list[dict]:
    """``n`` distinct examples of ``bucket`` that ingestion puts into ``split``."""
    out: list[dict[str, str]] = []
    i = 0
    while len(out) < n:
        prompt, target = f"{tag}{i}: what is {i} + {i}?", str(2 * i)
        if split_for_hash(content_hash(bucket, prompt, target)) == split:
            out.append({"prompt": prompt, "target": target})
        i += 1
    return out


@pytest.fixture
def make_examples() -> MakeExamples:
    return examples_of_split


@pytest.fixture
def make_store(engine: Engine) -> Iterator[MakeStore]:
    """``make_store(**options)``: a ReplayStore on the test's engine, closed at the end."""
    stores: list[ReplayStore] = []

    def make(**options: Any) -> ReplayStore:
        options.setdefault("flush_interval", 0.05)
        store = ReplayStore(engine, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
