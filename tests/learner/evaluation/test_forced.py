"""The forced match (one teacher-forced pass) against decoded greedy answers: on the
shipped ``small`` model, over families and levels where it answers some probes right and
some wrong, the two agree on (nearly) every probe, and a forced match is always a right
decoded answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learner.builtin.families import FAMILIES, make_examples
from learner.evaluation.graders import get_grader
from learner.evaluation.probes import (
    FORCED_GRADERS,
    _token_batches,
    forced_scores,
    greedy_answers,
)
from learner.model.loading import encode_examples, forced_match, load_base

# Where the shipped small model answers some right (8-19 of 40), and some it never does.
CASES = [("copy", 1), ("reverse", 1), ("sort", 1), ("addition", 1), ("comparison", 1),
         ("alignment", 1), ("alignment", 2), ("copy", 2)]  # fmt: skip


@pytest.fixture(scope="module")
def small(small_model_dir: str) -> tuple[torch.nn.Module, object]:
    model, tokenizer = load_base(Path(small_model_dir), torch.device("cpu"))
    return model, tokenizer


def test_forced_match_agrees_with_decoded_answers(small: tuple) -> None:
    model, tokenizer = small
    agree = total = right = 0
    for family, level in CASES:
        grader = FAMILIES[family].grader
        assert grader in FORCED_GRADERS
        examples = [(e["prompt"], e["target"]) for e in make_examples(family, 40, level, seed=3)]
        forced = forced_scores(model, tokenizer, examples, 256).matches
        texts = greedy_answers(model, tokenizer, examples, 32)
        graded = [
            get_grader(grader)(t, target) for t, (_, target) in zip(texts, examples, strict=True)
        ]
        for f, g in zip(forced, graded, strict=True):
            assert not f or g, (family, level)  # forced right implies decoded right
            agree += f == g
        total += len(examples)
        right += sum(graded)
    assert 0.15 * total < right < 0.85 * total, right  # a test that can tell them apart
    assert agree / total >= 0.97, (agree, total)  # on 2026-12-07: 320 of 320


def test_forced_match_needs_every_target_token_and_the_eos() -> None:
    labels = torch.tensor([[-100, -100, 5, 6, 2], [-100, -100, 5, 6, 2], [-100] * 5])
    logits = torch.zeros(3, 5, 8)
    for row, predicted in enumerate(([5, 6, 2], [5, 6, 7], [5, 6, 2])):
        for t, token in enumerate(predicted):  # position 1 + t predicts label 2 + t
            logits[row, 1 + t, token] = 1.0
    assert forced_match(logits, labels).tolist() == [True, False, False]


def test_forced_scores_loss_is_the_mean_target_loss(small: tuple) -> None:
    model, tokenizer = small
    examples = [(e["prompt"], e["target"]) for e in make_examples("copy", 8, 1, seed=0)]
    scores = forced_scores(model, tokenizer, examples, 256)
    batch = encode_examples(tokenizer, examples, 256)
    with torch.no_grad():
        from learner.model.loading import per_example_loss

        expected = per_example_loss(model.eval(), batch).tolist()
    assert scores.losses == pytest.approx(expected, rel=1e-4)
    assert scores.mean_loss == pytest.approx(sum(expected) / len(expected), rel=1e-4)


def test_token_batches_bound_rows_and_padded_tokens() -> None:
    lengths = [5, 300, 7, 6, 2000, 40] + [10] * 100
    batches = _token_batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 64
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 8192
