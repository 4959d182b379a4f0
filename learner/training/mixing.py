"""Batch composition: the focus bucket, prioritized replay of the others, alignment anchors.

Each training batch mixes three streams drawn from the replay store (DESIGN section 4):
``focus_share`` of it from the bucket chosen for this round, ``anchor_share`` from the
alignment buckets (so the model keeps its alignment behaviour while it learns), and the
rest by priority across all buckets (so old buckets are rehearsed). The focus and replay
streams' importance weights come from their own sampling distributions; anchors carry a
fixed loss weight instead: they are a defence, not an estimate of an expected loss, so
the prioritized draw's bias towards the anchors being forgotten is wanted, not undone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learner.replay import Batch, ReplayExample, ReplayStore


@dataclass
class MixedBatch:
    """The concatenated streams: ids ``[B]``, importance weights ``[B]``, examples, and
    which rows are alignment anchors ``[B]`` (bool)."""

    ids: np.ndarray
    weights: np.ndarray
    examples: list[ReplayExample]
    anchor: np.ndarray

    @classmethod
    def concat(cls, parts: list[Batch], anchor_part: int | None = None) -> MixedBatch:
        """``anchor_part``: the index in ``parts`` of the anchors (None: no anchors)."""
        anchor = [np.full(len(p.ids), i == anchor_part) for i, p in enumerate(parts)]
        return cls(
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.weights for p in parts]),
            [e for p in parts for e in p.examples],
            np.concatenate(anchor),
        )


def stream_sizes(
    batch_size: int, focus_share: float, anchor_share: float, has_anchor: bool
) -> tuple[int, int, int]:
    """(focus, anchor, replay) counts summing to ``batch_size``; focus gets at least one."""
    focus = max(1, round(batch_size * focus_share))
    anchor = round(batch_size * anchor_share) if has_anchor else 0
    anchor = min(anchor, batch_size - focus)
    return focus, anchor, batch_size - focus - anchor


def compose_batch(
    replay: ReplayStore,
    rng: np.random.Generator,
    focus: str,
    anchors: list[str],
    batch_size: int,
    focus_share: float,
    anchor_share: float,
    anchor_weight: float = 1.0,
    anchor_sampling: str = "uniform",
) -> MixedBatch:
    """Draw one mixed batch; ``anchors`` are the alignment buckets other than the focus.

    ``anchor_sampling``: "uniform" draws the anchors uniformly over all of ``anchors``
    together (every anchor example equally often, so each bucket in proportion to its
    size); "priority" draws them by priority from one bucket chosen at random.
    """
    n_focus, n_anchor, n_replay = stream_sizes(batch_size, focus_share, anchor_share, bool(anchors))
    parts = [replay.sample(n_focus, bucket=focus)]
    if n_anchor:
        if anchor_sampling == "uniform":
            anchor = replay.sample_uniform(n_anchor, anchors)
        else:
            anchor = replay.sample(n_anchor, bucket=anchors[int(rng.integers(len(anchors)))])
        anchor.weights[:] = anchor_weight
        parts.append(anchor)
    if n_replay:
        parts.append(replay.sample(n_replay))
    return MixedBatch.concat(parts, anchor_part=1 if n_anchor else None)
