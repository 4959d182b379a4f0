"""Chat examples are encoded as the chat route renders them, with loss on the last turn only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chat_model import LLAMA3_TEMPLATE, train_bpe_tokenizer

from learner.builtin.model import CHAT_TEMPLATE_FILE
from learner.model.chat import (
    BUILTIN_CHAT_TEMPLATE,
    ChatTemplateError,
    canonical_messages,
    chat_example,
    check_conversation,
    parse_messages,
    render_prompt,
)
from learner.model.loading import IGNORE_INDEX, pad_rows, prompt_ids, tokenize_examples

CONVERSATION = [
    {"role": "system", "content": "You sort letters."},
    {"role": "user", "content": "sort cba ="},
    {"role": "assistant", "content": "abc"},
    {"role": "user", "content": "sort fed ="},
    {"role": "assistant", "content": "def"},
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return train_bpe_tokenizer()


def test_the_prompt_is_the_chat_routes_rendering_without_a_second_bos(tokenizer: Any) -> None:
    prompt, target = chat_example(tokenizer, CONVERSATION)
    assert target == "def"
    assert prompt.startswith("<|begin_of_text|>") and prompt.endswith(
        "assistant<|end_header_id|>\n\n"
    )
    served_ids = tokenizer.apply_chat_template(
        CONVERSATION[:-1], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    [(p, t)] = tokenize_examples(tokenizer, [(prompt, target)], 512)
    assert p == served_ids == prompt_ids(tokenizer, render_prompt(tokenizer, CONVERSATION[:-1]))
    assert p.count(tokenizer.bos_token_id) == 1
    # The target is the last turn's content and the EOS, which here is the template's own
    # end of turn: prompt + target is the whole conversation as the template renders it.
    content = tokenizer("def", add_special_tokens=False)["input_ids"]
    assert t == [*content, tokenizer.eos_token_id]
    whole = tokenizer(
        tokenizer.apply_chat_template(CONVERSATION, tokenize=False), add_special_tokens=False
    )["input_ids"]
    assert p + t == whole


def test_loss_falls_on_the_final_assistant_turn_only(tokenizer: Any) -> None:
    prompt, target = chat_example(tokenizer, CONVERSATION)
    rows = tokenize_examples(tokenizer, [(prompt, target)], 512)
    batch = pad_rows(rows, tokenizer.pad_token_id)
    labels = batch.labels[0].tolist()
    learned = [tok for tok in labels if tok != IGNORE_INDEX]
    assert learned == rows[0][1]
    # The earlier assistant turn ("abc") is context: no loss on it.
    first = len(prompt_ids(tokenizer, render_prompt(tokenizer, CONVERSATION[:3])))
    assert all(tok == IGNORE_INDEX for tok in labels[:first])
    assert labels.index(learned[0]) == len(rows[0][0])


def test_the_builtin_template_renders_a_one_turn_chat_as_the_families_prompt(
    micro_model_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    assert (micro_model_dir / CHAT_TEMPLATE_FILE).read_text() == BUILTIN_CHAT_TEMPLATE
    builtin = AutoTokenizer.from_pretrained(micro_model_dir)
    one_turn = [{"role": "user", "content": "sort cba ="}, {"role": "assistant", "content": "abc"}]
    assert chat_example(builtin, one_turn) == ("sort cba =", "abc")


def test_no_template_and_a_refused_conversation_are_errors(tokenizer: Any) -> None:
    plain = train_bpe_tokenizer()
    plain.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        render_prompt(plain, CONVERSATION[:1])
    strict = train_bpe_tokenizer()
    strict.chat_template = (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
        + LLAMA3_TEMPLATE
    )
    with pytest.raises(ChatTemplateError, match="user first"):
        render_prompt(strict, CONVERSATION[:2])


@pytest.mark.parametrize(
    ("turns", "problem"),
    [
        ([{"role": "assistant", "content": "hi"}], "at least two turns"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "must be the assistant",
        ),
        (
            [{"role": "system", "content": "a"}, {"role": "assistant", "content": "b"}],
            "a user turn",
        ),
        ([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}], "unknown role"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}], "not be empty"),
    ],
)
def test_check_conversation(turns: list[dict[str, str]], problem: str) -> None:
    found = check_conversation(turns)
    assert found is not None and problem in found
    assert check_conversation(CONVERSATION) is None


def test_canonical_messages_round_trip_and_ignore_extra_keys() -> None:
    text = canonical_messages(CONVERSATION)
    assert parse_messages(text) == CONVERSATION
    extra = [{**m, "name": "x"} for m in CONVERSATION]
    assert canonical_messages(extra) == text
