"""The settings of a replay store and the batch it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from learner.replay.sumtree import Floats, Ints


@dataclass(frozen=True)
class ReplayConfig:
    """Settings of a :class:`ReplayStore` (validated on creation).

    ``quota``: the fraction of a cross-bucket batch split evenly over the buckets
    (see :mod:`learner.replay.sampler`); ``max_per_bucket``: the index keeps the newest
    that many examples of a bucket (``None``: all); ``block_size``: sum-tree block, a
    power of two; ``max_pending``: queued priority rows that trigger an early flush;
    ``gap_timeout``: seconds an unseen id is waited for (:mod:`learner.replay.feed`);
    ``text_cache_bytes``: memory for the examples' texts, so that a draw reads no SQL
    (:mod:`learner.replay.texts`; 0: read every batch's texts from SQL).
    """

    alpha: float = 0.6
    beta: float = 0.4
    beta_steps: int = 100_000
    eps: float = 1e-3
    quota: float = 0.25
    max_per_bucket: int | None = None
    flush_interval: float = 1.0
    refresh_interval: float = 0.5
    seed: int = 0
    block_size: int = 512
    max_pending: int = 50_000
    gap_timeout: float = 60.0
    text_cache_bytes: int = 512 * 2**20

    def __post_init__(self) -> None:
        checks = {
            "alpha must be >= 0": self.alpha >= 0,
            "beta must be in [0, 1]": 0 <= self.beta <= 1,
            "beta_steps must be >= 1": self.beta_steps >= 1,
            "eps must be > 0": self.eps > 0,
            "quota must be in [0, 1]": 0 <= self.quota <= 1,
            "max_per_bucket must be None or >= 1": (
                self.max_per_bucket is None or self.max_per_bucket >= 1
            ),
            "flush_interval must be > 0": self.flush_interval > 0,
            "refresh_interval must be >= 0": self.refresh_interval >= 0,
            "block_size must be a power of two >= 2": (
                self.block_size >= 2 and self.block_size & (self.block_size - 1) == 0
            ),
            "max_pending must be >= 1": self.max_pending >= 1,
            "gap_timeout must be >= 0": self.gap_timeout >= 0,
            "text_cache_bytes must be >= 0": self.text_cache_bytes >= 0,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("invalid ReplayConfig: " + "; ".join(failed))


class ReplayExample(NamedTuple):
    bucket: str
    prompt: str
    target: str


@dataclass(frozen=True, eq=False)
class Batch:
    """A sampled batch: ``ids`` int64 ``[n]``, ``weights`` float32 ``[n]`` (max 1),
    ``examples`` in the same order, and each draw's probability P(i) and the beta used."""

    ids: Ints
    weights: NDArray[np.float32]
    examples: list[ReplayExample]
    probabilities: Floats
    beta: float
