"""Length-grouped micro-batches: the split is the cheapest one, and a grouped step trains
the same adapter as one padded batch."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from peft.utils import get_peft_model_state_dict

from learner.config import LearnerConfig
from learner.training.grouping import length_groups
from learner.training.step import Trainer


def cost(groups: list[list[int]], lengths: list[int], overhead: int) -> int:
    return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)


def partitions(items: list[int], max_groups: int) -> Iterator[list[list[int]]]:
    """Every set partition of ``items`` into at most ``max_groups`` blocks."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for smaller in partitions(rest, max_groups):
        for k in range(len(smaller)):
            yield [*smaller[:k], [first, *smaller[k]], *smaller[k + 1 :]]
        if len(smaller) < max_groups:
            yield [[first], *smaller]


@pytest.mark.parametrize("seed", range(30))
def test_the_split_is_the_cheapest_of_all_partitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, max_groups = int(rng.integers(1, 8)), int(rng.integers(1, 4))
    lengths = [int(x) for x in rng.integers(1, 120, size=n)]
    overhead = int(rng.integers(0, 60))
    groups = length_groups(lengths, max_groups, overhead)
    assert sorted(itertools.chain(*groups)) == list(range(n))  # every row exactly once
    assert 1 <= len(groups) <= max_groups
    best = min(cost(p, lengths, overhead) for p in partitions(list(range(n)), max_groups))
    assert cost(groups, lengths, overhead) == best


def test_splits_only_where_padding_outweighs_a_call() -> None:
    short_and_long = [10] * 12 + [200] * 4
    assert len(length_groups(short_and_long, 4, overhead=48)) == 2
    assert len(length_groups([30] * 16, 4, overhead=48)) == 1  # nothing to save
    assert length_groups(short_and_long, 1, overhead=0) == [list(range(16))]
    assert length_groups([], 4, 48) == []


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_grouped_step_trains_what_one_batch_does(
    micro_model_dir: Path, restore_threads: None
) -> None:
    config = LearnerConfig(num_threads=1, device="cpu", warmup_steps=0, learning_rate=1e-2)
    cpu = torch.device("cpu")
    # Short additions and a few long rows: the grouped trainer splits this batch.
    examples = [(f"add {i} {i + 1} =", f" {2 * i + 1}") for i in range(10)]
    examples += [("copy " + "abcdefgh " * 8 + "=", " " + "abcdefgh " * 8)] * 3
    weights = np.linspace(0.5, 2.0, len(examples))
    results = []
    for groups in (1, 4):
        trainer = Trainer(replace(config, length_groups=groups), micro_model_dir, cpu)
        for _ in range(3):
            losses, tokens = trainer.step(examples, weights)
        adapter = {k: v.clone() for k, v in get_peft_model_state_dict(trainer.model).items()}
        results.append((losses, tokens, adapter))
    (one_l, one_t, one_a), (grouped_l, grouped_t, grouped_a) = results
    assert one_t == grouped_t
    np.testing.assert_allclose(grouped_l, one_l, rtol=1e-4, atol=1e-5)
    scale = max(float(v.abs().max()) for v in one_a.values())
    assert max(float((one_a[k] - grouped_a[k]).abs().max()) for k in one_a) <= 1e-4 * scale
