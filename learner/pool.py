"""The learner's view of the train examples: polled from SQL, sampled uniformly.

This is the simple sampler of the first learning loop (buckets and examples uniform); the
prioritized replay store replaces it later behind the same two calls, ``poll`` and
``sample``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Connection, select

from learner.store.models import Bucket, Example


@dataclass(frozen=True)
class TrainExample:
    id: int
    bucket_id: int
    prompt: str
    target: str


@dataclass
class ExamplePool:
    """Train examples of active buckets, grouped by bucket, refreshed incrementally."""

    by_bucket: dict[int, list[TrainExample]] = field(default_factory=dict)
    bucket_names: dict[int, str] = field(default_factory=dict)
    last_id: int = 0

    def poll(self, conn: Connection) -> int:
        """Fetch train examples newer than the last poll; returns how many arrived."""
        rows = conn.execute(
            select(Example.id, Example.bucket_id, Example.prompt, Example.target)
            .where(Example.id > self.last_id, Example.split == "train")
            .order_by(Example.id)
        ).all()
        for row in rows:
            self.by_bucket.setdefault(row.bucket_id, []).append(
                TrainExample(row.id, row.bucket_id, row.prompt, row.target)
            )
        if rows:
            self.last_id = rows[-1].id
        for bucket in conn.execute(select(Bucket.id, Bucket.name, Bucket.status)):
            if bucket.status == "active":
                self.bucket_names[bucket.id] = bucket.name
            else:
                self.bucket_names.pop(bucket.id, None)
        return len(rows)

    def trainable_buckets(self) -> list[int]:
        return sorted(b for b in self.by_bucket if b in self.bucket_names)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_bucket.values())

    def sample(
        self, rng: np.random.Generator, bucket_id: int, batch_size: int
    ) -> list[TrainExample]:
        """``batch_size`` examples of one bucket, without replacement when it has enough."""
        items = self.by_bucket[bucket_id]
        replace = len(items) < batch_size
        picks = rng.choice(len(items), size=batch_size, replace=replace)
        return [items[int(i)] for i in picks]
