"""The distillation term towards the base model (Learning without Forgetting)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from learner.builtin.families import REFUSAL
from learner.config import LearnerConfig
from learner.model.loading import batch_logits, target_kl
from learner.training.step import Trainer

PAIRS = [("help me make a bomb =", REFUSAL), ("copy abc =", "abc"), ("reverse ab =", "ba")]


def _trainer(micro_model_dir: Path, distill_weight: float) -> Trainer:
    config = replace(LearnerConfig(), device="cpu", num_threads=1, distill_weight=distill_weight)
    return Trainer(config, micro_model_dir, torch.device("cpu"))


def _objective(trainer: Trainer, distill: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    encoded, _ = trainer.encode(PAIRS)
    weights = torch.ones(len(PAIRS))
    return trainer._group_loss(encoded, weights, distill)


def test_kl_is_zero_for_a_zero_adapter(micro_model_dir: Path) -> None:
    trainer = _trainer(micro_model_dir, distill_weight=1.0)  # fresh: B = 0, the base exactly
    encoded, _ = trainer.encode(PAIRS)
    logits = batch_logits(trainer.model, encoded)
    with torch.no_grad(), trainer.model.disable_adapter():
        reference = batch_logits(trainer.model, encoded)
    kl = target_kl(logits, reference, encoded.labels)
    assert kl.shape == (len(PAIRS),)
    torch.testing.assert_close(kl, torch.zeros(len(PAIRS)), atol=1e-6, rtol=0)
    ce, with_kl = _objective(trainer, np.array([True, True, False]))
    torch.testing.assert_close(with_kl, ce.sum(), atol=1e-5, rtol=0)


def test_kl_grows_with_drift_and_its_gradient_is_finite(micro_model_dir: Path) -> None:
    trainer = _trainer(micro_model_dir, distill_weight=2.0)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    distill = np.array([True, False, True])
    ce, objective = _objective(trainer, distill)
    kl = (objective - ce.sum()) / 2.0
    assert kl.item() > 1e-3  # the adapter moved the distributions away from the base's
    objective.backward()
    grads = [p.grad for p in trainer.model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # Only the KL term: its gradient is non-zero too.
    trainer.model.zero_grad()
    ce, objective = _objective(trainer, distill)
    (objective - ce.sum()).backward()
    total = sum(float(p.grad.abs().sum()) for p in trainer.model.parameters() if p.grad is not None)
    assert np.isfinite(total) and total > 0


def test_distillation_off_is_plain_cross_entropy(micro_model_dir: Path) -> None:
    trainer = _trainer(micro_model_dir, distill_weight=0.0)
    losses, tokens = trainer.step(PAIRS, np.ones(len(PAIRS), dtype=np.float32),
                                  distill=np.ones(len(PAIRS), dtype=bool))  # fmt: skip
    assert losses.shape == (len(PAIRS),) and tokens > 0 and np.isfinite(losses).all()


def test_distill_weight_is_validated() -> None:
    with pytest.raises(ValueError, match="distill_weight"):
        LearnerConfig(distill_weight=-1.0)
    with pytest.raises(ValueError, match="anchor_sampling"):
        LearnerConfig(anchor_sampling="loudest")


def test_first_answer_tokens_weigh_more() -> None:
    """Qi et al. 2024 weighting: the KL at the first k answer positions counts w times."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 6, 5, generator=gen)  # (B, T, V)
    reference = logits.clone()
    reference[0, 1] += 3.0 * torch.randn(5, generator=gen)  # drift at the first answer position
    labels = torch.tensor([[-100, -100, 1, 2, 3, 4]])  # answer tokens at positions 2..5
    plain = target_kl(logits, reference, labels)
    first = target_kl(logits, reference, labels, first_tokens=1, first_weight=4.0)
    # Four answer positions, only the first differs: mean d/4 against 4d/(4+3).
    drift = plain.item() * 4
    assert plain.item() == pytest.approx(drift / 4)
    assert first.item() == pytest.approx(4 * drift / 7, rel=1e-5)
    same = target_kl(logits, logits, labels, first_tokens=2, first_weight=4.0)
    torch.testing.assert_close(same, torch.zeros(1), atol=1e-6, rtol=0)
