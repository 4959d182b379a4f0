"""The settings of a replay store and the batch it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from learner.replay.sumtree import Floats, Ints
from learner.validation import NON_NEGATIVE, above, at_least, check, failures, optional, within

_POWER_OF_TWO = check(
    lambda value: value >= 2 and value & (value - 1) == 0, "must be a power of two >= 2"
)


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

    alpha: float = field(default=0.6, metadata=NON_NEGATIVE)
    beta: float = field(default=0.4, metadata=within(0, 1))
    beta_steps: int = field(default=100_000, metadata=at_least(1))
    eps: float = field(default=1e-3, metadata=above(0))
    quota: float = field(default=0.25, metadata=within(0, 1))
    max_per_bucket: int | None = field(
        default=None, metadata=optional(at_least(1), "must be None or >= 1")
    )
    flush_interval: float = field(default=1.0, metadata=above(0))
    refresh_interval: float = field(default=0.5, metadata=NON_NEGATIVE)
    seed: int = 0
    block_size: int = field(default=512, metadata=_POWER_OF_TWO)
    max_pending: int = field(default=50_000, metadata=at_least(1))
    gap_timeout: float = field(default=60.0, metadata=NON_NEGATIVE)
    text_cache_bytes: int = field(default=512 * 2**20, metadata=NON_NEGATIVE)

    def __post_init__(self) -> None:
        # Every failure in one message, not only the first one.
        failed = failures(self)
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
