"""A sum tree over numpy arrays, vectorised over a whole batch of updates or searches.

Layout: one float64 array ``nodes`` of length ``2 * capacity`` in heap order. The leaves
(one per slot) are ``nodes[capacity:]``; node ``j`` has the children ``2j`` and ``2j + 1``.

The leaves are grouped into aligned blocks of ``block_size`` leaves, and sums are kept only
inside the blocks, up to the block roots ``nodes[capacity // block_size : 2 * capacity //
block_size]``. A prefix sum over the block totals replaces the top of the tree. Why: numpy
costs about a microsecond per call whatever the batch size, and update and search make a
few calls per tree level, so dropping the levels above the blocks halves their cost at a
million slots; the price is one ``cumsum`` over ``capacity / block_size`` totals per
search (a few microseconds). Blocks also let the sampler draw from one bucket: a bucket
owns whole blocks, so its sum tree is its blocks plus the prefix sum over their totals.
With ``block_size == capacity`` this is the classic sum tree.

Every method works on a whole batch: the Python loops run over tree levels only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class SumTree:
    """Sums of non-negative leaf values with batched update and prefix-sum search.

    ``find(u)`` returns, for each prefix sum ``u`` in ``[0, total)``, the first slot whose
    cumulative sum exceeds ``u`` (``searchsorted(cumsum(leaves), u, "right")``), so a leaf
    is hit with probability ``leaf / total`` when ``u`` is uniform. Capacity grows by
    doubling and never shrinks.
    """

    def __init__(self, capacity: int = 1024, block_size: int = 512) -> None:
        if not _is_pow2(block_size) or block_size < 2:
            raise ValueError(f"block_size must be a power of two >= 2, got {block_size}")
        self.block_size = block_size
        self.depth = block_size.bit_length() - 1  # levels from a block root to its leaves
        self._nodes: Floats = np.zeros(2 * max(_next_pow2(capacity), block_size))

    @property
    def capacity(self) -> int:
        return self._nodes.size // 2

    @property
    def num_blocks(self) -> int:
        return self.capacity // self.block_size

    @property
    def nodes(self) -> Floats:
        """The whole heap array ``[2 * capacity]`` (read it, do not write it)."""
        return self._nodes

    @property
    def leaves(self) -> Floats:
        """The leaf values, a read-only view of shape ``[capacity]``."""
        view = self._nodes[self.capacity :]
        view.flags.writeable = False
        return view

    @property
    def block_totals(self) -> Floats:
        """The sum of each block, a read-only view of shape ``[num_blocks]``."""
        first = self.num_blocks  # block roots sit at [capacity/block, 2 capacity/block)
        view = self._nodes[first : 2 * first]
        view.flags.writeable = False
        return view

    @property
    def total(self) -> float:
        return float(self.block_totals.sum())

    def grow(self, capacity: int) -> None:
        """Make room for at least ``capacity`` slots (doubling); leaf values are kept."""
        new_capacity = self.capacity
        while new_capacity < capacity:
            new_capacity *= 2
        if new_capacity == self.capacity:
            return
        leaves = self._nodes[self.capacity :]
        self._nodes = np.zeros(2 * new_capacity)
        self._nodes[new_capacity : new_capacity + leaves.size] = leaves
        self._rebuild()

    def set_leaves(self, values: ArrayLike, start: int = 0) -> None:
        """Bulk load ``values`` into the slots ``start, start + 1, ...`` in O(n)."""
        values = np.asarray(values, dtype=np.float64)
        self.grow(start + values.size)
        self._nodes[self.capacity + start : self.capacity + start + values.size] = values
        self._rebuild()

    def _rebuild(self) -> None:
        """Recompute every node inside the blocks from the leaves, one level at a time."""
        nodes, width = self._nodes, self.capacity
        for _ in range(self.depth):
            width //= 2  # nodes of this level: [width, 2 width); children: [2 width, 4 width)
            nodes[width : 2 * width] = nodes[2 * width : 4 * width : 2]
            nodes[width : 2 * width] += nodes[2 * width + 1 : 4 * width : 2]

    def update(self, slots: ArrayLike, values: ArrayLike) -> None:
        """Set ``leaves[slots] = values`` (shapes ``[m]``); with repeated slots the last wins.

        Parents are recomputed from both children rather than shifted by a delta, so
        rounding errors never accumulate and repeated slots need no special care.
        """
        slots = np.asarray(slots, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        if slots.shape != values.shape or slots.ndim != 1:
            raise ValueError("slots and values must be 1-d arrays of the same length")
        if slots.size == 0:
            return
        if slots.min() < 0 or slots.max() >= self.capacity:
            raise IndexError("slot out of range")
        if not (values.min() >= 0 and values.max() < np.inf):  # NaN fails both tests
            raise ValueError("leaf values must be finite and non-negative")
        nodes = self._nodes
        pairs = nodes.reshape(-1, 2)  # row j = (node 2j, node 2j + 1) = the children of j
        idx = slots + self.capacity  # [m] node indices, one level up per iteration
        nodes[idx] = values
        # Preallocated [m, 2] children and [m] sums: four numpy calls per level, not eight.
        children, sums = np.empty((idx.size, 2)), np.empty(idx.size)
        for _ in range(self.depth):
            idx >>= 1
            np.take(pairs, idx, axis=0, out=children)
            np.add(children[:, 0], children[:, 1], out=sums)
            nodes[idx] = sums

    def find(self, prefix_sums: ArrayLike) -> Ints:
        """The slots (``[m]``) holding the prefix sums ``[m]`` over all leaves."""
        u = np.asarray(prefix_sums, dtype=np.float64)
        totals = self.block_totals
        cum = np.cumsum(totals)  # [num_blocks]
        nonzero = np.flatnonzero(totals)
        if nonzero.size == 0:
            raise ValueError("the tree is empty (all leaves are zero)")
        blocks = np.searchsorted(cum, u, side="right")
        # u == total (or a rounding hair above) must stay in the last non-empty block.
        blocks = np.minimum(blocks, nonzero[-1])
        return self.find_in_blocks(blocks, u - (cum[blocks] - totals[blocks]))

    def find_in_blocks(self, blocks: ArrayLike, offsets: ArrayLike) -> Ints:
        """The slots holding prefix sum ``offsets[k]`` inside block ``blocks[k]`` (``[m]``).

        Descends from the block roots, one gather per level: go right when the offset is
        at least the left child's sum, and subtract that sum.
        """
        blocks = np.asarray(blocks, dtype=np.int64)
        v = np.array(offsets, dtype=np.float64)  # a copy: it is consumed on the way down
        nodes = self._nodes
        idx = blocks + self.num_blocks  # [m] block roots
        for _ in range(self.depth):
            idx <<= 1
            left = nodes[idx]
            go_right = v >= left
            v -= left * go_right
            idx += go_right
        slots = idx - self.capacity
        # The offset can exceed its subtree's sum by an ulp, which walks off the right
        # edge into empty leaves; these rare draws are answered by an exact search.
        empty = nodes[idx] <= 0
        if empty.any():
            slots[empty] = self._find_exact(blocks[empty], np.asarray(offsets)[empty])
        return slots

    def _find_exact(self, blocks: Ints, offsets: Floats) -> Ints:
        out = np.empty(blocks.size, dtype=np.int64)
        for k, (block, offset) in enumerate(zip(blocks, offsets, strict=True)):
            first = int(block) * self.block_size
            values = self.leaves[first : first + self.block_size]
            nonzero = np.flatnonzero(values)
            if nonzero.size == 0:
                raise ValueError(f"block {block} is empty")
            at = int(np.searchsorted(np.cumsum(values), offset, side="right"))
            out[k] = first + min(at, int(nonzero[-1]))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"block_size": self.block_size, "leaves": self.leaves.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["block_size"] != self.block_size:
            raise ValueError("block_size differs from the saved tree's")
        leaves = np.asarray(state["leaves"], dtype=np.float64)
        self._nodes = np.zeros(2 * max(_next_pow2(leaves.size), self.block_size))
        self.set_leaves(leaves)
