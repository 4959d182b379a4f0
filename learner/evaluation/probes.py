"""Probe evaluation: greedy answers to a bucket's probe examples, judged by its grader.

Answers are returned (and stored) per probe, not only as a mean: the accuracy matrix, the
negative flip rate and the gate's paired tests all need to know *which* probes a model
got right. A bucket's probe sample is its oldest ``limit`` probes: a stable set, so a
version's stored answers stay comparable with every later candidate's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from learner.evaluation.graders import get_grader
from learner.model.generate import TransformersDecoder, judged_answers
from learner.model.loading import (
    batch_logits,
    forced_match,
    pad_rows,
    target_loss,
    tokenize_examples,
)
from learner.store.probes import ProbeSet

#: Probes and padded tokens per teacher-forced forward pass in :func:`forced_scores`.
LOSS_BATCH = 64
FORCED_TOKENS = 8192


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode (no dropout) for the block, then back in its former mode,
    also when the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class ProbeAnswer:
    """A model's greedy answer to one probe and whether the grader accepts it."""

    example_id: int
    correct: bool
    answer: str


def answer_probes(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    probes: ProbeSet,
    max_new_tokens: int,
    batch_size: int = 64,
) -> list[ProbeAnswer]:
    """The model's greedy answer to every probe of the set, graded.

    (Tried and measured slower here: a teacher-forced pass first, decoding only the probes
    whose greedy answer is not their target. On the builtin models a forced pass over 64
    probes costs 75% of decoding them, so it paid only where nearly every answer is right.)
    """
    texts = greedy_answers(model, tokenizer, probes.examples, max_new_tokens, batch_size=batch_size)
    grade = get_grader(probes.grader)
    return [
        ProbeAnswer(eid, bool(grade(text, target)), text)
        for eid, text, (_, target) in zip(probes.ids, texts, probes.examples, strict=True)
    ]


def greedy_answers(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[tuple[str, str]],
    max_new_tokens: int,
    *,
    batch_size: int = 64,
) -> list[str]:
    """Greedy completions of the prompts, at most a little longer than the longest target."""
    with eval_mode(model):
        decoder = TransformersDecoder(model, tokenizer)
        return judged_answers(decoder, examples, max_new_tokens, batch_size)


@dataclass(frozen=True)
class ForcedScores:
    """Teacher-forced scores of probes: per probe, the target's mean token cross-entropy
    and whether the greedy answer would be the target exactly (:func:`forced_match`)."""

    losses: list[float]
    matches: list[bool]

    @property
    def mean_loss(self) -> float | None:
        return sum(self.losses) / len(self.losses) if self.losses else None


#: Graders for which an exact greedy answer is the only kind they accept (nearly: ``exact``
#: strips whitespace, ``numeric`` reads the first number), so that the forced match is the
#: graded answer without generating it.
FORCED_GRADERS = ("exact", "numeric")


def forced_scores(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[tuple[str, str]],
    max_length: int,
) -> ForcedScores:
    """Loss and forced match of every probe, from teacher-forced passes over batches of
    similar length (at most FORCED_TOKENS padded tokens each: the logits are (B, T, V)).

    The held-out loss moves before exact-match accuracy does: a slow starter's targets
    become likelier long before a whole answer is right, while random targets (a bucket
    that cannot be learned) stop getting likelier once their alphabet is known. The forced
    match gives the exact-match accuracy from the same pass, far cheaper than generating
    the answers (a decode is one forward pass per answer token).
    """
    device = next(model.parameters()).device
    rows = tokenize_examples(tokenizer, examples, max_length)
    losses = [0.0] * len(rows)
    matches = [False] * len(rows)
    with eval_mode(model), torch.inference_mode():
        for group in _token_batches([len(p) + len(t) for p, t in rows]):
            batch = pad_rows([rows[i] for i in group], tokenizer.pad_token_id).to(device)
            logits = batch_logits(model, batch)  # (B, T, V)
            loss = target_loss(logits, batch.labels).tolist()  # (B,)
            match = forced_match(logits, batch.labels).tolist()  # (B,)
            for k, i in enumerate(group):
                losses[i], matches[i] = loss[k], match[k]
    return ForcedScores(losses, matches)


def _token_batches(lengths: Sequence[int]) -> list[list[int]]:
    """Row indices, shortest first, in batches of at most LOSS_BATCH rows and
    FORCED_TOKENS padded tokens."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        current = batches[-1] if batches else None
        if (
            current is None
            or len(current) >= LOSS_BATCH
            or (len(current) + 1) * lengths[i] > FORCED_TOKENS
        ):
            batches.append([i])
        else:
            current.append(i)
    return batches
