"""The LoRA model, its optimizer and one importance-weighted training step.

The step only trains and returns the per-example losses ``[B]``; what they mean for the
replay priorities, the teacher or the loop's counters is decided by its callers.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict

from learner.config import LearnerConfig
from learner.model.loading import (
    EncodedBatch,
    batch_logits,
    encode_examples,
    load_base,
    pad_rows,
    per_example_loss,
    target_kl,
    target_loss,
    tokenize_examples,
)
from learner.training.grouping import length_groups

# What one more forward/backward call costs on a CPU, in computed (padded) tokens: on the
# builtin small model, one thread, a call took 3.6 ms + 82 us per token (fit over batches
# of 2-16 rows x 8-96 tokens on this project's 2-core machine): 44 tokens, rounded up.
GROUP_OVERHEAD_TOKENS = 48
#: (prompt, target) pairs, as a batch is trained.
Pairs = list[tuple[str, str]]


def lora_config(config: LearnerConfig, base: torch.nn.Module | None = None) -> LoraConfig:
    """peft's config for the learner's adapter; with ``LoraSettings.capacity`` set, the rank
    is resolved against ``base`` (without a base: rank ``r``, the upper bound)."""
    lora = config.lora
    targets = lora.target_modules
    rank = lora.r
    if lora.capacity is not None and base is not None:
        rank = resolve_rank(base, lora.capacity, lora.r, targets)
    return LoraConfig(
        r=rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )


def resolve_rank(
    base: torch.nn.Module, capacity: float, max_rank: int, targets: str | tuple[str, ...]
) -> int:
    """The largest rank <= ``max_rank`` (at least 1) whose LoRA parameters are at most
    ``capacity`` x the base's: a rank-r adapter on a linear layer ``(in, out)`` holds
    ``r * (in + out)`` parameters (A is ``(r, in)``, B is ``(out, r)``).

    ``targets`` as peft reads them: "all-linear" is every ``nn.Linear`` but the output
    head; another string is a regular expression matched against the whole module path;
    a tuple names modules by the last part of their path (``q_proj``).
    """
    output_embeddings = getattr(base, "get_output_embeddings", None)
    head = output_embeddings() if callable(output_embeddings) else None
    per_rank = 0
    for name, module in base.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:
            continue
        if _targeted(name, targets):
            per_rank += module.in_features + module.out_features
    total = sum(p.numel() for p in base.parameters())
    if per_rank == 0:
        return max_rank  # nothing matched here; peft will name the mismatch
    return max(1, min(max_rank, int(capacity * total / per_rank)))


def _targeted(name: str, targets: str | tuple[str, ...]) -> bool:
    """Whether peft puts LoRA on the linear module at path ``name``."""
    if targets == "all-linear":
        return True
    if isinstance(targets, str):  # a string is a pattern, not a set of names
        return re.fullmatch(targets, name) is not None
    return name.rsplit(".", 1)[-1] in targets


class Trainer:
    """The base model with its trainable LoRA adapter, the optimizer, and the step."""

    def __init__(self, config: LearnerConfig, model_dir: Path, device: torch.device) -> None:
        self.config = config
        self.device = device
        torch.set_num_threads(config.num_threads or max(1, len(os.sched_getaffinity(0)) - 1))
        torch.manual_seed(config.seed)
        base, self.tokenizer = load_base(model_dir, device)
        self.lora = lora_config(config, base)  # the rank resolved against this base
        self.model: PeftModel = get_peft_model(base, self.lora)
        # The freshly initialised adapter (B = 0: exactly the base model), for a reset.
        self._initial = {k: v.clone() for k, v in get_peft_model_state_dict(self.model).items()}
        self.optimizer = self._new_optimizer()
        self.tokens_per_second = 0.0
        # On CUDA: bf16 autocast (the weights and AdamW stay float32, so LoRA's small
        # updates are not rounded away) and batch widths padded to multiples of 8.
        cuda = device.type == "cuda"
        self.autocast = cuda and config.bf16 and torch.cuda.is_bf16_supported()
        self.pad_multiple = 8 if cuda else 1
        # On a CPU, padding costs as much as tokens: a step runs as up to
        # `length_groups` micro-batches of similar length (learner.training.grouping).
        # A GPU pays per call more than per padded token: one batch.
        self.max_groups = 1 if cuda else max(1, config.length_groups)
        self.model.train()

    def encode(self, examples: list[tuple[str, str]]) -> tuple[EncodedBatch, int]:
        """The batch on the device, and its token count (taken on the host: no sync)."""
        return self._to_device(
            encode_examples(self.tokenizer, examples, self.config.max_length, self.pad_multiple)
        )

    def _to_device(self, encoded: EncodedBatch) -> tuple[EncodedBatch, int]:
        tokens = int(encoded.attention_mask.sum())
        pinned = self.device.type == "cuda"
        if pinned:  # a pinned host copy lets the transfer overlap the step before it
            encoded = EncodedBatch(*(t.pin_memory() for t in (
                encoded.input_ids, encoded.attention_mask, encoded.labels)))  # fmt: skip
        return encoded.to(self.device, non_blocking=pinned), tokens

    def losses(self, encoded: EncodedBatch) -> torch.Tensor:
        """Per-example losses ``[B]`` (float32), under bf16 autocast on CUDA."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return per_example_loss(self.model, encoded)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        self.fresh_steps = 0  # steps since this optimizer was made: the warm-up position
        return torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
        )

    def step(
        self, examples: Pairs, weights: np.ndarray, distill: np.ndarray | None = None
    ) -> tuple[np.ndarray, int]:
        """One AdamW step on the importance-weighted mean loss.

        ``examples``: (prompt, target) pairs; ``weights``: importance weights ``[B]``;
        ``distill``: bool ``[B]``, the rows also pulled towards the base model's token
        distributions (``distill_weight``, see :meth:`_group_loss`).
        Returns the per-example losses ``[B]`` (cross-entropy only) and the batch's tokens.
        """
        started = time.perf_counter()
        rows = tokenize_examples(self.tokenizer, examples, self.config.max_length)
        lengths = [len(p) + len(t) for p, t in rows]
        groups = length_groups(lengths, self.max_groups, GROUP_OVERHEAD_TOKENS)
        if distill is None or self.config.distill_weight <= 0:
            distill = np.zeros(len(rows), dtype=bool)
        self.optimizer.zero_grad(set_to_none=True)
        losses = np.empty(len(rows), dtype=np.float32)
        tokens = 0
        for group in groups:
            encoded, n = self._to_device(
                pad_rows([rows[i] for i in group], self.tokenizer.pad_token_id, self.pad_multiple)
            )
            w = torch.as_tensor(weights[group], device=self.device)  # (b,); anchors: anchor_weight
            part, objective = self._group_loss(encoded, w, distill[group])
            # Divided by the whole batch's size, the groups' gradients add up to that of
            # the batch's mean objective.
            (objective / len(rows)).backward()
            # The step's host sync (one per group; one group on CUDA): the caller needs
            # the losses for the replay priorities.
            losses[group] = part.detach().cpu().numpy()
            tokens += n
        self._apply_update()
        elapsed = max(time.perf_counter() - started, 1e-9)
        self.tokens_per_second = 0.9 * self.tokens_per_second + 0.1 * tokens / elapsed
        return losses, tokens

    def _group_loss(
        self, encoded: EncodedBatch, w: torch.Tensor, distill: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example cross-entropy ``(b,)`` and the group's summed objective.

        Prioritized replay draws high-loss items more often; the importance weights ``w``
        undo that bias in the gradient (Schaul et al. 2015). Rows marked in ``distill``
        add ``distill_weight`` x KL(base || model) on their answer positions (Learning
        without Forgetting, Li & Hoiem 2016): hard targets on a few anchors only say which
        token to keep; the KL keeps the base's whole distribution there, which is what
        drifts first when LoRA moves every layer. The base's logits come from the same
        weights with the adapter disabled, without gradients: one more forward pass over
        the distilled rows, no second model in memory.
        """
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = batch_logits(self.model, encoded)  # (b, T, V)
            part = target_loss(logits, encoded.labels)  # (b,)
            objective = (w * part).sum()
            if distill.any():
                rows = torch.as_tensor(np.flatnonzero(distill), device=self.device)
                with torch.no_grad(), self.model.disable_adapter():
                    reference = batch_logits(self.model, _select_rows(encoded, rows))
                kl = target_kl(
                    logits[rows],
                    reference,
                    encoded.labels[rows],
                    self.config.distill_first_tokens,
                    self.config.distill_first_weight,
                )  # (d,)
                objective = objective + self.config.distill_weight * kl.sum()
        return part, objective

    def _apply_update(self) -> None:
        """The update from the accumulated gradients: warm-up learning rate (linear over
        ``warmup_steps`` after a fresh optimizer), clipping to norm 1, the AdamW step."""
        self.fresh_steps += 1
        warmup = self.config.warmup_steps
        scale = min(1.0, self.fresh_steps / warmup) if warmup else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate * scale
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()

    def load_weights(self, path: Path) -> None:
        """Replace the adapter's weights by a saved version's, keeping the optimizer."""
        weights = load_peft_weights(str(path), device=str(self.device))
        set_peft_model_state_dict(self.model, weights)

    def load_version(self, path: Path | None) -> None:
        """Continue from a saved version's weights (None: the base model, a fresh adapter).

        The optimizer starts afresh: its moments belong to the abandoned lineage.
        """
        if path is None:
            weights = {k: v.clone() for k, v in self._initial.items()}
        else:
            weights = load_peft_weights(str(path), device=str(self.device))
        set_peft_model_state_dict(self.model, weights)
        self.optimizer = self._new_optimizer()
        self.model.train()


def _select_rows(encoded: EncodedBatch, rows: torch.Tensor) -> EncodedBatch:
    """The batch restricted to ``rows`` (indices into B)."""
    return EncodedBatch(encoded.input_ids[rows], encoded.attention_mask[rows], encoded.labels[rows])
