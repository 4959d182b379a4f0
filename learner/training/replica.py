"""A second copy of the base model with a LoRA adapter, for evaluating saved versions.

Candidate evaluations (the gate's probe answers) take longer than many training steps:
on the builtin model they were about half the learner's wall time at a candidate every
30 steps (bench/results/learner.md). With a replica the learner saves the candidate's
weights, hands them to the replica, and trains on while the candidate is evaluated on
another thread (another core, or the same GPU). The replica has its own tokenizer: a
fast tokenizer used from two threads at once can fail ("Already borrowed").
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import load_peft_weights, set_peft_model_state_dict

from learner.model.loading import load_base


class EvalReplica:
    """The base model and one adapter slot, loaded once; ``load`` swaps in saved weights."""

    def __init__(self, model_dir: Path, device: torch.device, lora: LoraConfig) -> None:
        self.device = device
        base, self.tokenizer = load_base(model_dir, device)
        self.model: PeftModel = get_peft_model(base, lora)
        self.model.eval()
        self.model.requires_grad_(False)  # never trained: no gradients, no optimizer state
        self.lock = threading.Lock()  # one evaluation at a time

    def load(self, path: Path) -> None:
        """Give the adapter slot the weights saved in ``path`` (an adapter directory)."""
        weights = load_peft_weights(str(path), device=str(self.device))
        set_peft_model_state_dict(self.model, weights)
