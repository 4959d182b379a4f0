"""Encoding, per-example loss and generation on the micro builtin model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from learner.config import GenerationParams
from learner.model.generate import generate_choices as generate
from learner.model.loading import (
    IGNORE_INDEX,
    _DrawToken,
    encode_examples,
    load_base,
    per_example_loss,
)


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
    assert all(g.finish in ("stop", "length") for g in greedy)
    text = greedy[0].text
    if len(text) > 1:
        stopped = generate(
            model, tokenizer, prompts[:1], GenerationParams(max_new_tokens=6, stop=(text[1],))
        )
        assert [(g.text, g.finish) for g in stopped] == [(text[: text.index(text[1])], "stop")]
    sampled = GenerationParams(max_new_tokens=8, temperature=1.0, seed=3)
    assert generate(model, tokenizer, prompts, sampled) == generate(
        model, tokenizer, prompts, sampled
    )


def test_sampling_leaves_the_global_rng_alone(micro_model_dir: Path) -> None:
    """A seeded request draws from its own generator: the same output whatever the global
    RNG holds, and the global RNG (which unseeded requests would share) is not reseeded."""
    model, tokenizer = load_base(micro_model_dir, torch.device("cpu"))
    prompts = ["copy ab =", "reverse abc ="]
    seeded = GenerationParams(max_new_tokens=8, temperature=1.5, seed=3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = generate(model, tokenizer, prompts, seeded)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(456)
    assert generate(model, tokenizer, prompts, seeded) == first
    state = torch.get_rng_state()
    generate(model, tokenizer, prompts, replace(seeded, seed=None))
    assert torch.equal(torch.get_rng_state(), state)
    # It does sample: other seeds give other completions.
    outputs = {
        tuple(generate(model, tokenizer, prompts, replace(seeded, seed=s))) for s in range(6)
    }
    assert len(outputs) > 1


def test_the_draw_follows_the_distribution() -> None:
    """The token-drawing processor samples softmax(scores) and leaves only that token."""
    generator = torch.Generator().manual_seed(0)
    draw = _DrawToken(generator)
    scores = torch.log(torch.tensor([[1.0, 3.0]])).repeat(4000, 1)
    out = draw(torch.zeros((4000, 1), dtype=torch.long), scores)  # type: ignore[arg-type]
    assert ((out == 0).sum(dim=1) == 1).all() and torch.isinf(out).sum() == 4000
    share = (out[:, 1] == 0).float().mean().item()
    assert 0.72 < share < 0.78


def test_a_vanishing_temperature_decodes_greedily(micro_model_dir: Path) -> None:
    """Logits / 1e-134 overflow: such a temperature means greedy, not a crash."""
    model, tokenizer = load_base(micro_model_dir, torch.device("cpu"))
    greedy = generate(model, tokenizer, ["copy ab ="], GenerationParams(max_new_tokens=4))
    tiny = GenerationParams(max_new_tokens=4, temperature=1e-134, seed=3)
    assert generate(model, tokenizer, ["copy ab ="], tiny) == greedy


def test_the_word_cache_is_off_and_encodings_unchanged(micro_model_dir: Path) -> None:
    """load_base turns the BPE word cache off (it grew with every new prompt): the
    tokenizer had one to turn off, and its encodings are those of a tokenizer with it."""
    from transformers import AutoTokenizer

    from learner.model.loading import drop_word_cache

    _, tokenizer = load_base(micro_model_dir, torch.device("cpu"))
    # the builtin tokenizers are BPE with a cache
    assert drop_word_cache(AutoTokenizer.from_pretrained(micro_model_dir))
    cached = AutoTokenizer.from_pretrained(micro_model_dir)  # a fresh one, cache on
    prompts = [f"sort: {'dcba'[: 1 + i % 4]} {i} =" for i in range(200)] * 2
    for prompt in prompts:
        assert tokenizer(prompt)["input_ids"] == cached(prompt)["input_ids"]
