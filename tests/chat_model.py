"""Hugging Face model directories that are not builtin and have a chat template, made here.

- :func:`tiny_chat_llama`: a randomly initialised Llama-architecture model with a byte-level
  BPE tokenizer trained with ``tokenizers`` on local text and a Llama-3-style chat template
  (``<|begin_of_text|>`` in the template, ``<|eot_id|>`` ending every turn and serving as
  EOS), saved with ``save_pretrained``: what a user's instruct model looks like on disk.
- :func:`chat_copy` : a copy of a model directory (the builtin ``small`` one, which knows
  the synthetic families) with a chat template of its own and nothing builtin about it:
  a model that can learn a chat task within a test's budget.
- :func:`without_chat_template`: a copy with no chat template.

``python tests/chat_model.py DEST [--from DIR]`` writes one for a manual run.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
            "<|end_header_id|>", "<pad>"]  # fmt: skip

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

# For a character-level tokenizer (the builtin models'): plain text, no new special tokens
# (and no new embeddings). A user turn is its content as it is, so that a one-turn chat of a
# builtin family's prompt is the prompt the weights were trained on: the model can learn a
# chat bucket within a test's budget. A system turn is bracketed on a line of its own.
TEXT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}[{{ message['content'] }}]\n"
    "{% elif message['role'] == 'user' %}{{ message['content'] }}"
    "{% else %}{{ message['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
)


def _corpus() -> list[str]:
    """Local text to train the BPE merges on: the builtin families and some English."""
    from learner.builtin.families import FAMILIES, make_examples

    lines = [
        "The quick brown fox jumps over the lazy dog.",
        "How do I stop a Python process that hangs? Use kill or Ctrl-C.",
        "I'm sorry, but I can't help with that request.",
        "Here is a recipe for pancakes: flour, eggs, milk and a pinch of salt.",
        "Where is the best place to take a photo of the sunset?",
    ]
    for family in sorted(FAMILIES):
        lines += [f"{e['prompt']} {e['target']}" for e in make_examples(family, 50, 1, seed=3)]
    return lines * 4


def train_bpe_tokenizer(vocab_size: int = 600):  # type: ignore[no-untyped-def]
    """A byte-level BPE tokenizer with Llama-3-style special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<pad>",
        chat_template=LLAMA3_TEMPLATE,
        model_max_length=512,
    )


def tiny_chat_llama(dest: Path, seed: int = 0) -> Path:
    """A tiny random Llama with :func:`train_bpe_tokenizer`'s tokenizer, saved at ``dest``."""
    import torch
    import transformers

    tokenizer = train_bpe_tokenizer()
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = transformers.LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def chat_copy(source: Path, dest: Path, template: str = TEXT_TEMPLATE) -> Path:
    """``source``'s weights and tokenizer at ``dest``, with ``template`` as its chat template
    and no builtin provenance (served as a plain local directory)."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("provenance.json"))
    (dest / "chat_template.jinja").write_text(template)
    return dest


def without_chat_template(source: Path, dest: Path) -> Path:
    """``source`` at ``dest`` with no chat template."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("chat_template.jinja"))
    return dest


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--from", dest="source", type=Path, help="copy this model directory")
    args = parser.parse_args()
    made = chat_copy(args.source, args.dest) if args.source else tiny_chat_llama(args.dest)
    print(made)
