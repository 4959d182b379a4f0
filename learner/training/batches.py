"""The batch source: what can be trained right now, and one mixed batch of it.

It is polled on every tick: the bucket catalog is re-read and the replay index takes in
the examples committed since the last poll, so buckets that arrive after the learner
started are trained (an index refreshed only inside ``sample()`` never saw them).
Alignment buckets are never a focus: their train examples are the anchors of every batch.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import Connection

from learner.config import LearnerConfig
from learner.replay import ReplayStore
from learner.store.buckets import BucketInfo, bucket_catalog
from learner.training.mixing import MixedBatch, compose_batch


class BatchSource:
    """Bucket catalog + replay store -> focus arms, anchors and mixed batches."""

    def __init__(self, replay: ReplayStore, config: LearnerConfig, rng: np.random.Generator):
        self.replay = replay
        self.config = config
        self.rng = rng
        self.buckets: dict[str, BucketInfo] = {}

    def poll(self, conn: Connection) -> None:
        """Re-read the bucket catalog and index newly committed examples."""
        self.buckets = bucket_catalog(conn)
        self.replay.refresh_if_due()

    def _trainable(self, kind: str) -> list[str]:
        sizes = self.replay.bucket_sizes()
        return sorted(
            name
            for name, n in sizes.items()
            if n > 0
            and name in self.buckets
            and self.buckets[name].status == "active"
            and self.buckets[name].kind == kind
        )

    def focus_arms(self) -> list[str]:
        """Active task buckets with train examples: the teacher's arms."""
        return self._trainable("task")

    def anchors(self) -> list[str]:
        """Active alignment buckets with train examples: mixed into every batch."""
        return self._trainable("alignment")

    def batch(self, focus: str) -> MixedBatch:
        return compose_batch(
            self.replay,
            self.rng,
            focus,
            self.anchors(),
            self.config.batch_size,
            self.config.focus_share,
            self.config.anchor_share,
            self.config.anchor_weight,
            self.config.anchor_sampling,
        )
