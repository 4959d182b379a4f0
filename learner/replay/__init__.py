"""Prioritized experience replay over the train examples in SQL (DESIGN section 5).

Parts: :mod:`~learner.replay.sumtree` (vectorised sum tree), :mod:`~learner.replay.sampler`
(the in-memory index and the quota mixture), :mod:`~learner.replay.storage` (SQL),
:mod:`~learner.replay.feed` (new examples, late commits included),
:mod:`~learner.replay.writer` (write-behind of priorities) and
:mod:`~learner.replay.store` (the public :class:`ReplayStore`).
"""

from learner.replay.config import Batch, ReplayConfig, ReplayExample
from learner.replay.store import ReplayStore

__all__ = ["Batch", "ReplayConfig", "ReplayExample", "ReplayStore"]
