"""Model loading, example encoding, per-example loss and generation.

Any Hugging Face causal LM directory works; ``builtin:<preset>`` is trained locally on first
use. An example is trained as ``prompt + target + EOS`` with the loss on the target tokens
only, so generating from the raw prompt is exactly how an answer is produced at serve time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.generation import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from learner.config import GenerationParams

IGNORE_INDEX = -100


def pick_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def load_base(
    model_dir: Path, device: torch.device
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    drop_word_cache(tokenizer)
    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.to(device), tokenizer


def drop_word_cache(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Turn off the BPE model's cache of tokenized words (Rust ``tokenizers``); True if
    there was one.

    The service tokenizes every submitted example and every new training text, so the
    cache only ever grows with new words, and a tokenizer without a pre-tokenizer (the
    builtin ones) caches each whole prompt as one word. Measured on the builtin ``sturdy``
    tokenizer (tokenizers 0.23, 2026-12-07): 8,000 batches of new random prompts grew the
    process by 49 MB with the default cache, 80 MB when cleared every 200 batches
    (fragmentation), 11.7 MB with 1,000 entries and 5.5 MB (flat after the first 1,000
    batches) with none, at the same speed (17.3 against 18.6 us per prompt for repeated
    ones); generation alone on pre-tokenized ids stayed flat. ``bench/soak.py`` measures
    what it does to the service's growth (README "Soak").
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    resize = getattr(getattr(backend, "model", None), "_resize_cache", None)
    if not callable(resize):
        return False
    resize(0)
    return True


@dataclass
class EncodedBatch:
    """Right-padded token ids, attention mask and labels (prompt positions ignored)."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), IGNORE_INDEX outside the target

    def to(self, device: torch.device, non_blocking: bool = False) -> EncodedBatch:
        return EncodedBatch(
            self.input_ids.to(device, non_blocking=non_blocking),
            self.attention_mask.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
        )


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """BOS and the prompt's tokens. A prompt rendered by a chat template often begins with
    the BOS text already (Llama 3's ``<|begin_of_text|>``): then it is not doubled."""
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id
    return ids if bos is None or ids[:1] == [bos] else [bos, *ids]


def encode_examples(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[tuple[str, str]],
    max_length: int,
    pad_to_multiple_of: int = 1,
) -> EncodedBatch:
    """Encode (prompt, target) pairs; over-long ones are cut from the left of the prompt.

    ``pad_to_multiple_of``: the batch's width is rounded up to a multiple of it (8 on CUDA:
    matrix shapes that fit the tensor cores' tiles)."""
    rows = tokenize_examples(tokenizer, examples, max_length)
    return pad_rows(rows, tokenizer.pad_token_id, pad_to_multiple_of)


TokenRow = tuple[list[int], list[int]]  # (prompt ids, target ids + EOS)


def tokenize_examples(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[tuple[str, str]], max_length: int
) -> list[TokenRow]:
    """Token ids of (prompt, target) pairs, at most ``max_length`` together: over-long
    ones lose the start of the prompt (the target and the EOS after it are kept)."""
    rows: list[TokenRow] = []
    for prompt, target in examples:
        p = prompt_ids(tokenizer, prompt)
        t = list(tokenizer(target, add_special_tokens=False)["input_ids"])
        t.append(tokenizer.eos_token_id)
        keep = max(max_length - len(t), 1)
        rows.append((p[-keep:], t[: max_length - 1]))
    return rows


def pad_rows(rows: Sequence[TokenRow], pad: int, pad_to_multiple_of: int = 1) -> EncodedBatch:
    """Right-padded ids, mask and labels ``(B, T)`` of tokenized rows."""
    width = max(len(p) + len(t) for p, t in rows)
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (p, t) in enumerate(rows):
        seq = p + t
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, len(p) : len(seq)] = torch.tensor(t)
    return EncodedBatch(ids, mask, labels)


def per_example_loss(model: torch.nn.Module, batch: EncodedBatch) -> torch.Tensor:
    """Mean token cross-entropy of each example's target, shape (B,)."""
    return target_loss(batch_logits(model, batch), batch.labels)


def batch_logits(model: torch.nn.Module, batch: EncodedBatch) -> torch.Tensor:
    """The model's logits ``(B, T, V)`` on a batch."""
    logits: torch.Tensor = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask
    ).logits
    return logits


def target_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy of each example's target ``(B,)`` from logits ``(B, T, V)``."""
    # Position t predicts token t+1: drop the last logit and the first label.
    shift_logits = logits[:, :-1, :].float()  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    token_loss = F.cross_entropy(
        shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (B, T-1)
    n_tokens = (shift_labels != IGNORE_INDEX).sum(dim=1).clamp(min=1)
    return token_loss.sum(dim=1) / n_tokens


def forced_match(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Whether greedy decoding would answer each example with exactly its target, ``(B,)``
    bool from logits ``(B, T, V)``: the argmax at every target position, the EOS after it
    included, is the label. Greedy decoding takes the argmax token by token, so it emits
    the target and stops exactly when this holds (one forward pass instead of a decode)."""
    predicted = logits[:, :-1, :].argmax(dim=-1)  # (B, T-1): position t predicts t+1
    shift_labels = labels[:, 1:]  # (B, T-1)
    scored = shift_labels != IGNORE_INDEX
    return ((predicted == shift_labels) | ~scored).all(dim=1) & scored.any(dim=1)


def target_kl(
    logits: torch.Tensor,
    reference: torch.Tensor,
    labels: torch.Tensor,
    first_tokens: int = 0,
    first_weight: float = 1.0,
) -> torch.Tensor:
    """Weighted mean per-token KL(reference || model) over each example's target positions,
    ``(B,)``.

    ``logits`` and ``reference`` are ``(B, T, V)`` on the same tokens. The forward KL of
    Learning without Forgetting (Li & Hoiem 2016; Hinton et al. 2015 at temperature 1): the
    model is pulled towards the reference's whole distribution at every answer position,
    not only towards the one token of the target, so what the reference would have said
    instead is kept too. The first ``first_tokens`` answer positions weigh ``first_weight``
    (Qi et al. 2024: alignment lives mostly in the first answer tokens). Zero when the two
    distributions are equal.
    """
    mask = labels[:, 1:] != IGNORE_INDEX  # (B, T-1): positions that predict a target token
    log_p = F.log_softmax(logits[:, :-1, :].float(), dim=-1)  # (B, T-1, V)
    log_q = F.log_softmax(reference[:, :-1, :].float(), dim=-1)  # (B, T-1, V)
    per_token = (log_q.exp() * (log_q - log_p)).sum(dim=-1)  # (B, T-1)
    weights = mask.float()  # (B, T-1)
    if first_tokens > 0:
        position = mask.cumsum(dim=1)  # 1 at the first answer position, 2 at the next, ...
        weights = weights * torch.where(position <= first_tokens, first_weight, 1.0)
    return (per_token * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


# Below this, sampling is greedy decoding (its limit as the temperature goes to 0): logits
# divided by a temperature like 1e-134 overflow to inf and the probabilities become NaN.
MIN_SAMPLING_TEMPERATURE = 1e-3


@torch.no_grad()
def left_padded(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, both (B, T), left-padded so that a batch decodes
    together (every row's next token is at the last position)."""
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, width - len(e) :] = torch.tensor(e)
        mask[i, width - len(e) :] = 1
    return ids, mask


def decoding_processors(
    model: torch.nn.Module, params: GenerationParams, device: torch.device
) -> LogitsProcessorList:
    """The logits processors for ``params``, to pass to a greedy ``model.generate``.

    Always greedy for Hugging Face: when sampling, the last processor has already drawn the
    token, so the argmax only picks it up (see _DrawToken).
    """
    sampling = params.temperature >= MIN_SAMPLING_TEMPERATURE
    return LogitsProcessorList(_sampling_processors(model, params, device) if sampling else [])


class _DrawToken(LogitsProcessor):
    """Draws each row's next token with a private generator and leaves only it selectable.

    Hugging Face's own sampling draws from the global torch RNG, which every request of the
    process shares: seeding it for one client made the others' sampling predictable, and
    concurrent requests disturbed a seeded one. With this processor last and generation
    greedy, each call has its own random stream and the global RNG is never touched.
    """

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float(), dim=-1)
        drawn = torch.multinomial(probs, num_samples=1, generator=self.generator)
        only_drawn = torch.full_like(scores, -float("inf")).scatter_(1, drawn, 0.0)
        return only_drawn  # type: ignore[return-value]


def _sampling_processors(
    model: torch.nn.Module, params: GenerationParams, device: torch.device
) -> list[LogitsProcessor]:
    """The warpers that ``do_sample=True`` would add, then the draw with this call's RNG.

    Temperature and top-p come from the request, top-k (if any) from the model's own
    generation config, as before. ``params.seed`` makes the draws repeatable; without one
    the generator is seeded from the operating system's entropy.
    """
    generator = torch.Generator(device=device)
    if params.seed is not None:
        generator.manual_seed(params.seed)
    else:
        generator.seed()
    warpers: list[LogitsProcessor] = []
    if params.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(params.temperature))
    top_k = getattr(getattr(model, "generation_config", None), "top_k", None)
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if params.top_p < 1.0:
        warpers.append(TopPLogitsWarper(params.top_p))
    return [*warpers, _DrawToken(generator)]
