"""The in-memory prioritized index over the train examples of every bucket.

Each example holds one slot of a :class:`SumTree` whose leaf is ``p_i ** alpha``. A bucket
owns whole blocks of the tree (``block_size`` slots each), so the tree is a forest of
per-bucket sum trees: the totals of a bucket's blocks give its total, and one search
finds draws of every bucket at once (no loop over buckets or draws).

Sampling across buckets mixes two distributions. With ``n`` draws, ``q = floor(quota * n)``
of them are split evenly over the ``B`` buckets that hold examples (``q // B`` each, the
remainder to buckets chosen at random) and drawn by priority inside the bucket; the other
``n - q`` are drawn by priority over everything. Every draw is independent (with
replacement), and an item ``i`` of bucket ``b`` is drawn by one draw with probability

    P(i) = p_i^a * ( q / (n * B * S_b) + (n - q) / (n * S) ),

``S_b`` and ``S`` being the sums of ``p^a`` over the bucket and over everything. The
importance weights use this P(i), so they correct for the quota as well.

A cap (``max_per_bucket``) turns a bucket's slots into a ring: a new example replaces the
bucket's OLDEST one (lowest id), which leaves the index but stays in SQL. Oldest rather
than lowest priority because (1) the index is then exactly the newest ``cap`` examples of
each bucket, which a rebuild from SQL reproduces; (2) the lowest priorities are the
mastered examples that replay is meant to keep rehearsing, while persistently high ones
are often label noise, which priority eviction would pile up; (3) it costs O(1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from learner.replay.sumtree import Floats, Ints, SumTree

UNKNOWN = -1  # _id_slot value: never seen (or not a train example)
LEFT = -2  # _id_slot value: was in the index, evicted or removed; SQL still has it


@dataclass
class _Bucket:
    key: int  # buckets.id in SQL
    blocks: list[int] = field(default_factory=list)  # tree blocks owned, in allocation order
    size: int = 0  # examples in the index now
    placed: int = 0  # examples ever placed: the ring position under a cap


@dataclass(frozen=True)
class Draw:
    """The result of :meth:`PrioritizedIndex.draw` (all arrays ``[n]``)."""

    ids: Ints
    probabilities: Floats  # P(i) of one draw, for the importance weights
    population: int  # N in w = (N P)^-beta: examples the draws could reach


def mixed_probability(
    p: Floats, bucket_total: Floats, total: float, n: int, q: int, buckets: int
) -> Floats:
    """P(i) of one draw for leaves ``p`` (= p_i^alpha) under the quota mixture."""
    prob = p * ((n - q) / (n * total))
    if q:
        prob += p * (q / (n * buckets)) / bucket_total
    return prob


class PrioritizedIndex:
    """Example ids with their ``priority ** alpha`` in one sum tree, grouped by bucket.

    Buckets are keyed by their SQL id. New examples without a priority enter at
    ``max_priority``, the running maximum of all priorities seen (at least 1.0).
    """

    def __init__(
        self, alpha: float = 0.6, block_size: int = 512, max_per_bucket: int | None = None
    ) -> None:
        self.alpha = alpha
        self.max_per_bucket = max_per_bucket
        self.max_priority = 1.0
        self.tree = SumTree(block_size, block_size)
        self._slot_id: Ints = np.full(self.tree.capacity, UNKNOWN, dtype=np.int64)
        self._id_slot = np.full(1024, UNKNOWN, dtype=np.int64)  # example id -> slot
        self._block_owner = np.empty(0, dtype=np.int64)  # block -> position in _buckets
        self._buckets: list[_Bucket] = []
        self._bucket_pos: dict[int, int] = {}
        self._grouped: tuple[Ints, Ints] | None = None  # cache, see _blocks_by_bucket
        self._size = 0  # examples in the index

    # ----------------------------------------------------------------- contents

    def __len__(self) -> int:
        return self._size

    def nbytes(self) -> int:
        """Memory held by the index's arrays."""
        arrays = (self.tree.nodes, self._slot_id, self._id_slot, self._block_owner)
        return sum(a.nbytes for a in arrays)

    def bucket_sizes(self) -> dict[int, int]:
        return {b.key: b.size for b in self._buckets}

    def locate(self, ids: Ints) -> Ints:
        """Slot of each id, or ``UNKNOWN`` / ``LEFT``; ids must be non-negative."""
        if ids.size == 0 or ids.max() < self._id_slot.size:
            return self._id_slot[ids]
        out = np.full(ids.size, UNKNOWN, dtype=np.int64)
        inside = ids < self._id_slot.size
        out[inside] = self._id_slot[ids[inside]]
        return out

    def insert(self, ids: ArrayLike, buckets: ArrayLike, priorities: ArrayLike) -> Ints:
        """Add examples (ids in arrival order); NaN priority = new, at ``max_priority``.

        Ids the index has already seen are skipped. Returns the ids that entered at
        ``max_priority`` (the caller persists their entry priority).
        """
        all_ids = np.asarray(ids, dtype=np.int64)
        fresh = self.locate(all_ids) == UNKNOWN
        new_ids = all_ids[fresh]
        keys = np.asarray(buckets, dtype=np.int64)[fresh]
        prio = np.asarray(priorities, dtype=np.float64)[fresh]  # a copy: fancy indexing
        if new_ids.size == 0:
            return new_ids
        new = np.isnan(prio)
        if not new.all():
            self.max_priority = max(self.max_priority, float(prio[~new].max()))
        prio[new] = self.max_priority
        self._grow_ids(int(new_ids.max()))
        order = np.argsort(keys, kind="stable")  # group by bucket, keep arrival order
        unique_keys, starts = np.unique(keys[order], return_index=True)
        for key, group in zip(unique_keys, np.split(order, starts[1:]), strict=True):
            self._place(int(key), new_ids[group], prio[group])
        return new_ids[new]

    def readmit(self, ids: Ints, buckets: Ints, priorities: Floats) -> Ints:
        """Insert again ids that left the index (``remove``); the others are ignored.
        Returns the ids that entered at ``max_priority`` (NaN priority), as ``insert``."""
        ids = np.asarray(ids, dtype=np.int64)
        left = self.locate(ids) == LEFT
        self._id_slot[ids[left]] = UNKNOWN
        return self.insert(ids[left], np.asarray(buckets)[left], np.asarray(priorities)[left])

    def remove(self, ids: Ints) -> None:
        """Take examples out of the index (deleted in SQL): zero mass, slot left empty."""
        ids = np.unique(ids)
        slots = self.locate(ids)
        ids, slots = ids[slots >= 0], slots[slots >= 0]
        self.tree.update(slots, np.zeros(slots.size))
        self._slot_id[slots] = UNKNOWN
        self._id_slot[ids] = LEFT
        owners = self._block_owner[slots // self.tree.block_size]
        for position, count in zip(*np.unique(owners, return_counts=True), strict=True):
            self._buckets[position].size -= int(count)
        self._size -= slots.size

    def update(self, ids: Ints, priorities: Floats, slots: Ints | None = None) -> None:
        """Set the priorities of ids (``[m]`` each); ids that left the index are ignored.

        ``slots``: ``locate(ids)`` when the caller has it already.
        """
        slots = self.locate(ids) if slots is None else slots
        inside = slots >= 0
        if not inside.all():
            slots, priorities = slots[inside], priorities[inside]
        self.tree.update(slots, priorities**self.alpha)
        if priorities.size:
            self.max_priority = max(self.max_priority, float(priorities.max()))

    # ----------------------------------------------------------------- placement

    def _bucket(self, key: int) -> _Bucket:
        if key not in self._bucket_pos:
            self._bucket_pos[key] = len(self._buckets)
            self._buckets.append(_Bucket(key))
        return self._buckets[self._bucket_pos[key]]

    def _grow_ids(self, max_id: int) -> None:
        if max_id >= self._id_slot.size:
            size = 1 << max_id.bit_length()
            grown = np.full(size, UNKNOWN, dtype=np.int64)
            grown[: self._id_slot.size] = self._id_slot
            self._id_slot = grown

    def _place(self, key: int, ids: Ints, prio: Floats) -> None:
        """Put one bucket's new examples into its next slots (a ring under a cap)."""
        bucket, cap, size = self._bucket(key), self.max_per_bucket, self.tree.block_size
        if cap is not None and ids.size > cap:  # only the newest cap can stay
            self._id_slot[ids[:-cap]] = LEFT
            ids, prio = ids[-cap:], prio[-cap:]
        pos = bucket.placed + np.arange(ids.size)
        needed = bucket.placed + ids.size
        if cap is not None:
            pos %= cap
            needed = min(needed, cap)
        self._add_blocks(bucket, -(-needed // size) - len(bucket.blocks))
        slots = np.asarray(bucket.blocks)[pos // size] * size + pos % size
        evicted = self._slot_id[slots]
        evicted = evicted[evicted >= 0]
        self._id_slot[evicted] = LEFT
        self._slot_id[slots] = ids
        self._id_slot[ids] = slots
        self.tree.update(slots, prio**self.alpha)
        bucket.size += ids.size - evicted.size
        bucket.placed += ids.size
        self._size += ids.size - evicted.size

    def _add_blocks(self, bucket: _Bucket, count: int) -> None:
        if count <= 0:
            return
        first = self._block_owner.size
        self.tree.grow((first + count) * self.tree.block_size)
        if self._slot_id.size < self.tree.capacity:
            grown = np.full(self.tree.capacity, UNKNOWN, dtype=np.int64)
            grown[: self._slot_id.size] = self._slot_id
            self._slot_id = grown
        owner = np.full(count, self._bucket_pos[bucket.key], dtype=np.int64)
        self._block_owner = np.concatenate([self._block_owner, owner])
        bucket.blocks.extend(range(first, first + count))
        self._grouped = None

    def _blocks_by_bucket(self) -> tuple[Ints, Ints]:
        """Blocks sorted by owner ``[num_blocks]`` and bucket ``k``'s range ``[B + 1]``."""
        if self._grouped is None:
            order = np.argsort(self._block_owner, kind="stable")
            bounds = np.searchsorted(self._block_owner[order], np.arange(len(self._buckets) + 1))
            self._grouped = (order, bounds)
        return self._grouped

    # ----------------------------------------------------------------- sampling

    def draw(
        self, rng: np.random.Generator, n: int, bucket: int | None = None, quota: float = 0.0
    ) -> Draw:
        """``n`` independent draws by priority, from one bucket or mixed (module doc)."""
        if self._size == 0:
            raise ValueError("the replay index is empty")
        if bucket is not None:
            return self._draw_bucket(rng, n, self._buckets[self._bucket_pos[bucket]])
        order, bounds = self._blocks_by_bucket()
        t = self.tree.block_totals[order]  # [num_blocks], grouped by bucket
        cum = np.cumsum(t)  # [num_blocks] inclusive prefix sums
        bucket_totals = np.add.reduceat(t, bounds[:-1])  # [B]; every bucket owns a block
        live = np.flatnonzero(bucket_totals)
        q = int(quota * n) if live.size > 1 else 0
        # Each draw is a uniform prefix sum u: inside one bucket's range for the q quota
        # draws (the first q), over everything for the others.
        u = rng.random(n)
        u[q:] *= cum[-1]
        if q:
            owner = self._quota_owners(rng, live, q)  # [q] bucket of each quota draw
            start = bounds[owner]
            u[:q] = cum[start] - t[start] + u[:q] * bucket_totals[owner]
        pos = np.searchsorted(cum, u, side="right")  # [n] block, in grouped order
        if q:  # rounding must not carry a quota draw into the next bucket
            pos[:q] = np.clip(pos[:q], start, bounds[owner + 1] - 1)
        np.minimum(pos, t.size - 1, out=pos)
        blocks = order[pos]
        slots = self.tree.find_in_blocks(blocks, u - (cum[pos] - t[pos]))
        owner_totals = bucket_totals[self._block_owner[blocks]]
        p = self.tree.leaves[slots]
        prob = mixed_probability(p, owner_totals, cum[-1], n, q, live.size)
        return Draw(self._slot_id[slots], prob, self._size)

    def draw_uniform(self, rng: np.random.Generator, n: int, buckets: list[int]) -> Draw:
        """``n`` independent draws uniformly over every example of ``buckets`` together,
        priorities ignored: each bucket contributes in proportion to its size.

        For rehearsal that must cover a whole set (the alignment anchors): a draw by
        priority keeps returning the few examples with the highest loss, so behaviour the
        model still gets right is rarely rehearsed, and a small bucket drawn as often as
        a large one is rehearsed far more per example.
        """
        blocks = [b for key in buckets if key in self._bucket_pos
                  for b in self._buckets[self._bucket_pos[key]].blocks]  # fmt: skip
        if not blocks:
            raise ValueError(f"buckets {buckets} have no examples in the index")
        size = self.tree.block_size
        slots = (np.asarray(blocks)[:, None] * size + np.arange(size)).ravel()  # [blocks*size]
        slots = slots[self._slot_id[slots] >= 0]  # the occupied ones
        if slots.size == 0:
            raise ValueError(f"buckets {buckets} have no examples in the index")
        drawn = slots[rng.integers(0, slots.size, size=n)]
        return Draw(self._slot_id[drawn], np.full(n, 1.0 / slots.size), int(slots.size))

    @staticmethod
    def _quota_owners(rng: np.random.Generator, live: Ints, q: int) -> Ints:
        """``q // B`` draws per live bucket, the remainder to distinct random buckets."""
        owners = np.repeat(live, q // live.size)
        extra = q % live.size
        if extra:
            owners = np.concatenate([owners, live[rng.permutation(live.size)[:extra]]])
        return owners

    def _draw_bucket(self, rng: np.random.Generator, n: int, bucket: _Bucket) -> Draw:
        if bucket.size == 0:
            raise ValueError(f"bucket {bucket.key} has no examples in the index")
        blocks = np.asarray(bucket.blocks)
        t = self.tree.block_totals[blocks]
        cum = np.cumsum(t)
        u = rng.random(n) * cum[-1]
        pos = np.minimum(np.searchsorted(cum, u, side="right"), blocks.size - 1)
        slots = self.tree.find_in_blocks(blocks[pos], u - (cum[pos] - t[pos]))
        prob = self.tree.leaves[slots] / cum[-1]
        return Draw(self._slot_id[slots], prob, bucket.size)

    def probabilities(
        self, n: int, bucket: int | None = None, quota: float = 0.0
    ) -> tuple[Ints, Floats]:
        """Every indexed id (sorted) with its P(i) for one draw of an ``n``-draw sample."""
        slots = np.flatnonzero(self._slot_id >= 0)
        ids, p = self._slot_id[slots], self.tree.leaves[slots]
        owner = self._block_owner[slots // self.tree.block_size]
        totals = np.bincount(owner, weights=p, minlength=len(self._buckets)).astype(np.float64)
        if bucket is not None:
            mine = owner == self._bucket_pos[bucket]
            ids, prob = ids[mine], p[mine] / totals[self._bucket_pos[bucket]]
        else:
            live = int(np.count_nonzero(totals > 0))
            q = int(quota * n) if live > 1 else 0
            prob = mixed_probability(p, totals[owner], float(totals.sum()), n, q, live)
        order = np.argsort(ids)
        return ids[order], prob[order]

    def state_dict(self) -> dict[str, Any]:
        # The contents are rebuilt from SQL; only the running maximum is not in SQL.
        return {"max_priority": self.max_priority}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.max_priority = max(self.max_priority, float(state["max_priority"]))
