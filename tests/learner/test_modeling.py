"""Encoding, per-example loss and generation on the micro builtin model."""

from __future__ import annotations

from pathlib import Path

import torch

from learner.config import GenerationParams
from learner.modeling import IGNORE_INDEX, encode_examples, generate, load_base, per_example_loss


def test_encoding_masks_the_prompt(micro_model_dir: Path) -> None:
    _, tokenizer = load_base(micro_model_dir, torch.device("cpu"))
    batch = encode_examples(tokenizer, [("ab =", "ba"), ("abcd =", "x")], max_length=64)
    assert batch.input_ids.shape == batch.labels.shape == (2, 1 + 6 + 1 + 1)
    first = batch.labels[0].tolist()
    # BOS + 4 prompt characters are ignored; the target and EOS are learned; then padding.
    assert first[:5] == [IGNORE_INDEX] * 5
    assert first[5:8] == [*tokenizer("ba", add_special_tokens=False)["input_ids"],
                          tokenizer.eos_token_id]  # fmt: skip
    assert first[8:] == [IGNORE_INDEX]
    assert batch.attention_mask[0].tolist() == [1] * 8 + [0]


def test_per_example_loss_is_per_example(micro_model_dir: Path) -> None:
    model, tokenizer = load_base(micro_model_dir, torch.device("cpu"))
    pair = [("ab =", "ba"), ("copy xyz =", "xyz")]
    together = per_example_loss(model, encode_examples(tokenizer, pair, 64))
    alone = torch.stack(
        [per_example_loss(model, encode_examples(tokenizer, [p], 64))[0] for p in pair]
    )
    assert together.shape == (2,)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_generation_stop_and_seeded_sampling(micro_model_dir: Path) -> None:
    model, tokenizer = load_base(micro_model_dir, torch.device("cpu"))
    prompts = ["copy ab =", "reverse abc ="]
    greedy = generate(model, tokenizer, prompts, GenerationParams(max_new_tokens=6))
    assert greedy == generate(model, tokenizer, prompts, GenerationParams(max_new_tokens=6))
    assert all(finish in ("stop", "length") for _, finish in greedy)
    text = greedy[0][0]
    if len(text) > 1:
        stopped = generate(
            model, tokenizer, prompts[:1], GenerationParams(max_new_tokens=6, stop=(text[1],))
        )
        assert stopped == [(text[: text.index(text[1])], "stop")]
    sampled = GenerationParams(max_new_tokens=8, temperature=1.0, seed=3)
    assert generate(model, tokenizer, prompts, sampled) == generate(
        model, tokenizer, prompts, sampled
    )
