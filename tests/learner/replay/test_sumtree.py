"""The vectorised sum tree against brute force (cumulative sums over the leaves)."""

from __future__ import annotations

import numpy as np
import pytest

from learner.replay.sumtree import SumTree


def brute_find(leaves: np.ndarray, prefix_sums: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.cumsum(leaves), prefix_sums, side="right")


@pytest.mark.parametrize(("capacity", "block_size"), [(64, 64), (1000, 16), (4096, 2)])
def test_find_matches_cumsum(capacity: int, block_size: int) -> None:
    rng = np.random.default_rng(0)
    tree = SumTree(capacity, block_size)
    values = rng.random(capacity) * (rng.random(capacity) < 0.8)  # some zero leaves
    tree.update(np.arange(capacity), values)
    expected = np.zeros(tree.capacity)
    expected[:capacity] = values
    assert np.allclose(tree.leaves, expected)
    assert tree.total == pytest.approx(values.sum())
    u = rng.random(5000) * values.sum()
    assert np.array_equal(tree.find(u), brute_find(expected, u))
    # The ends, 0 and (a hair below) the total, give the first and last non-empty slot.
    found = tree.find(np.array([0.0, np.nextafter(tree.total, 0)]))
    assert list(found) == [np.flatnonzero(values)[0], np.flatnonzero(values)[-1]]


def test_update_batches_with_repeats_and_growth() -> None:
    rng = np.random.default_rng(1)
    tree = SumTree(8, 4)
    reference = np.zeros(8)
    for round_ in range(50):
        size = tree.capacity if round_ % 10 else tree.capacity * 2
        tree.grow(size)
        reference = np.pad(reference, (0, tree.capacity - reference.size))
        slots = rng.integers(0, size, 40)  # repeats: the last value must win
        values = rng.random(40)
        tree.update(slots, values)
        for s, v in zip(slots, values, strict=True):
            reference[s] = v
        assert np.allclose(tree.leaves, reference)
        blocks = reference.reshape(-1, tree.block_size).sum(axis=1)
        assert np.allclose(tree.block_totals, blocks)
        u = rng.random(1000) * reference.sum()
        assert np.array_equal(tree.find(u), brute_find(reference, u))
    assert tree.capacity == 8 * 2**5


def test_find_in_blocks_and_bulk_load() -> None:
    rng = np.random.default_rng(2)
    tree = SumTree(8, block_size=8)
    values = rng.random(100) + 0.01
    tree.set_leaves(values)
    assert tree.capacity == 128 and tree.num_blocks == 16
    blocks = rng.integers(0, 12, 500)  # blocks 0..11 are full
    offsets = rng.random(500) * tree.block_totals[blocks]
    slots = tree.find_in_blocks(blocks, offsets)
    for block, offset, slot in zip(blocks, offsets, slots, strict=True):
        first = block * 8
        assert slot == first + brute_find(values[first : first + 8], np.array([offset]))[0]


def test_rounding_never_selects_an_empty_leaf() -> None:
    tree = SumTree(block_size=4)
    tree.update(np.array([0, 1, 2]), np.array([1e16, 1.0, 3.0]))  # slot 3 stays empty
    u = np.array([np.nextafter(tree.total, 0), tree.total, tree.total * 1.0000001])
    assert np.all(tree.find(u) == 2)


def test_invalid_input_is_rejected() -> None:
    tree = SumTree(16, 4)
    with pytest.raises(ValueError, match="non-negative"):
        tree.update(np.array([1]), np.array([np.nan]))
    with pytest.raises(ValueError, match="non-negative"):
        tree.update(np.array([1]), np.array([-1.0]))
    with pytest.raises(IndexError):
        tree.update(np.array([16]), np.array([1.0]))
    with pytest.raises(ValueError, match="empty"):
        tree.find(np.array([0.5]))
    with pytest.raises(ValueError, match="power of two"):
        SumTree(16, 6)


def test_state_dict_round_trip() -> None:
    tree = SumTree(32, 8)
    tree.update(np.arange(20), np.arange(20, dtype=float))
    other = SumTree(block_size=8)
    other.load_state_dict(tree.state_dict())
    assert np.array_equal(other.leaves, tree.leaves)
    assert np.array_equal(other.block_totals, tree.block_totals)
