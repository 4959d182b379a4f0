"""LoRA capacity as a share of the base model's parameters (LoraSettings.capacity)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from learner.config import LearnerConfig, LoraSettings
from learner.training.step import Trainer


def _trainer(model_dir: Path, lora: LoraSettings) -> Trainer:
    config = replace(LearnerConfig(), device="cpu", num_threads=1, lora=lora)
    return Trainer(config, model_dir, torch.device("cpu"))


def _shares(trainer: Trainer) -> tuple[int, float]:
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in trainer.model.parameters() if not p.requires_grad)
    return trainer.lora.r, trainable / frozen


@pytest.mark.parametrize("capacity", [0.01, 0.05])
def test_rank_is_the_largest_within_the_capacity(micro_model_dir: Path, capacity: float) -> None:
    rank, share = _shares(_trainer(micro_model_dir, LoraSettings(r=64, capacity=capacity)))
    assert 1 <= rank < 64
    assert share <= capacity or rank == 1
    if rank < 64:  # one rank more would overshoot
        _, more = _shares(_trainer(micro_model_dir, LoraSettings(r=rank + 1, capacity=None)))
        assert more > capacity


def test_rank_r_is_an_upper_bound_and_none_keeps_it(micro_model_dir: Path) -> None:
    assert _shares(_trainer(micro_model_dir, LoraSettings(r=2, capacity=1.0)))[0] == 2
    assert _shares(_trainer(micro_model_dir, LoraSettings(r=3, capacity=None)))[0] == 3


def test_capacity_outside_the_unit_interval_is_refused() -> None:
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="capacity"):
            LoraSettings(capacity=bad)
