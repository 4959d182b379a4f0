"""The one way a model answers prompts, for serving and for judging alike: each choice's
text, token count and log probabilities, streamed.

A :class:`Decoder` answers a batch of prompts under one :class:`GenerationParams`. Three
implement it: :class:`TransformersDecoder` (here), and the vLLM and HTTP decoders of
:mod:`learner.model.decoders`. Serving decodes through one; every judged answer (probes,
the gate, ensemble members, the builtin's evaluation) comes from :func:`judged_answers`,
greedy and capped by :func:`answer_cap`, so a served greedy answer is the answer the gate
judged, whichever engine produced it.

For a transformers model, one ``model.generate`` call decodes a batch of left-padded
prompts with the decoding processors of :mod:`learner.model.loading`
(:func:`generate_choices`).

A stopping criterion watches every decoding step: it ends a row as soon as one of its stop
strings appears, ends the whole call when the caller cancels (a streaming client went
away), and hands each row's newly decoded text to ``on_delta`` so that it can be streamed
while the rest is decoded.

Log probabilities come from the model's raw logits (``output_logits``), that is, from the
model's own distribution, before temperature or top-p reshape it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import PreTrainedTokenizerBase
from transformers.generation import StoppingCriteria, StoppingCriteriaList

from learner.config import GenerationParams
from learner.model.loading import (
    decoding_processors,
    encode_examples,
    left_padded,
    per_example_loss,
)

#: A judged answer may run this many tokens past the longest target: room for EOS and one
#: more, so that a model which runs on is caught, without paying for a long ramble.
ANSWER_SLACK = 2
#: Log probabilities are clamped to this (JSON has no -Infinity).
MIN_LOGPROB = -9999.0
#: Called with a row (choice) index and the text newly decoded for it.
OnDelta = Callable[[int, str], None]


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, log probability and the ``k`` likeliest at its place."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Generated:
    """One choice: its text (cut at EOS or the first stop string), why it ended ("stop"
    or "length"), the tokens generated, and per-token log probabilities if asked for."""

    text: str
    finish: str
    tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class Delivery:
    """What a served request adds to a judged one: the log probabilities of each token and
    of the ``top_logprobs`` likeliest (None: none), its text streamed to ``on_delta`` as it
    is decoded, and ``cancel``, which ends the decoding (a streaming client went away)."""

    top_logprobs: int | None = None
    on_delta: OnDelta | None = None
    cancel: threading.Event | None = None


#: A judged answer: text and finish only.
JUDGED = Delivery()


class Decoder(Protocol):
    """Answers a batch of prompts, one :class:`Generated` per prompt, in order."""

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` takes (answer caps are counted with it)."""
        ...

    def decode(
        self, prompts: Sequence[str], params: GenerationParams, delivery: Delivery = JUDGED
    ) -> list[Generated]: ...


def answer_cap(
    targets: Sequence[str], length: Callable[[str], int] = len, limit: int | None = None
) -> int:
    """How many tokens an answer to these targets may take: the longest target's
    ``length`` (its tokens; characters bound them for a model whose tokenizer is not at
    hand) plus :data:`ANSWER_SLACK`, at most ``limit``."""
    cap = max((length(t) for t in targets), default=0) + ANSWER_SLACK
    return cap if limit is None else min(cap, limit)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one occurred."""
    cuts = [text.index(s) for s in stops if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` not to stream yet: an incomplete UTF-8 character
    (decoded as U+FFFD) or the start of a stop string that the next tokens may complete."""
    hold = len(text) - len(text.rstrip("\ufffd"))
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:size]):
                hold = size
                break
    return hold


class _Watch(StoppingCriteria):
    """Called after every decoding step with the sequences so far, (B, width + steps).

    Records where each row ended (EOS or a stop string), streams each row's text as it
    grows, and stops the call when ``cancel`` is set.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        width: int,
        rows: int,
        stops: Sequence[str],
        on_delta: OnDelta | None,
        cancel: threading.Event | None,
    ) -> None:
        self.tokenizer = tokenizer
        self.width = width
        self.stops = tuple(s for s in stops if s)
        self.on_delta = on_delta
        self.cancel = cancel
        self.ends: list[int | None] = [None] * rows  # generated tokens kept, once ended
        self.streamed = [""] * rows

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs: object
    ) -> torch.BoolTensor:
        rows = input_ids.shape[0]
        stop_now = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        generated = input_ids[:, self.width :].tolist()  # (B, steps)
        for row, tokens in enumerate(generated):
            if self.ends[row] is None and self._step(row, tokens):
                stop_now[row] = True
        if self.cancel is not None and self.cancel.is_set():  # checked last: on_delta may set it
            stop_now.fill_(True)
        return stop_now  # type: ignore[return-value]

    def _step(self, row: int, tokens: list[int]) -> bool:
        """Look at a row's newest token; True if a stop string just ended the row."""
        if tokens[-1] == self.tokenizer.eos_token_id:
            self.ends[row] = len(tokens) - 1  # EOS itself is not part of the answer
            self._stream(row, tokens[:-1], final=True)
            return False  # Hugging Face's own EOS criterion ends the row
        if not self.stops and self.on_delta is None:
            return False
        text, stopped = cut_at_stop(self._decode(tokens), self.stops)
        if stopped:
            self.ends[row] = len(tokens)
        self._emit(row, text, final=stopped)
        return stopped

    def _stream(self, row: int, tokens: list[int], final: bool) -> None:
        if self.on_delta is not None:
            text, _ = cut_at_stop(self._decode(tokens), self.stops)
            self._emit(row, text, final)

    def _emit(self, row: int, text: str, final: bool) -> None:
        """Hand on what ``text`` adds to what was streamed (all of it once ``final``)."""
        if self.on_delta is None:
            return
        safe = text if final else text[: len(text) - _held_back(text, self.stops)]
        done = self.streamed[row]
        if len(safe) > len(done) and safe.startswith(done):
            self.streamed[row] = safe
            self.on_delta(row, safe[len(done) :])

    def _decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))


@torch.no_grad()
def generate_choices(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    params: GenerationParams,
    *,
    top_logprobs: int | None = None,
    on_delta: OnDelta | None = None,
    cancel: threading.Event | None = None,
) -> list[Generated]:
    """Complete each prompt (one row per prompt); ``top_logprobs`` not None: also the log
    probability of every generated token and of the ``top_logprobs`` likeliest ones."""
    device = next(model.parameters()).device
    ids, mask = left_padded(tokenizer, prompts)
    width = ids.shape[1]
    watch = _Watch(tokenizer, width, len(prompts), params.stop, on_delta, cancel)
    out = model.generate(  # type: ignore[operator]
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=params.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        do_sample=False,
        logits_processor=decoding_processors(model, params, device),
        stopping_criteria=StoppingCriteriaList([watch]),
        return_dict_in_generate=True,
        output_logits=top_logprobs is not None,
    )
    # out.logits: one (B, V) tensor per step -> (B, steps, V) log probabilities.
    logprobs = (
        torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)
        if top_logprobs is not None
        else None
    )
    results = []
    for row, generated in enumerate(out.sequences[:, width:].tolist()):
        end = watch.ends[row]
        kept = generated[: len(generated) if end is None else end]
        decoded = str(tokenizer.decode(kept, skip_special_tokens=True))
        text, stopped = cut_at_stop(decoded, params.stop)
        finish = "stop" if stopped or end is not None else "length"
        token_logprobs = None
        if logprobs is not None and top_logprobs is not None:
            token_logprobs = _token_logprobs(tokenizer, kept, logprobs[row], top_logprobs, text)
        results.append(Generated(text, finish, len(kept), token_logprobs))
    return results


class TransformersDecoder:
    """A transformers causal LM (a peft model included) and its tokenizer."""

    def __init__(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, max_length: int = 512
    ) -> None:
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(
        self, prompts: Sequence[str], params: GenerationParams, delivery: Delivery = JUDGED
    ) -> list[Generated]:
        return generate_choices(
            self.model,
            self.tokenizer,
            prompts,
            params,
            top_logprobs=delivery.top_logprobs,
            on_delta=delivery.on_delta,
            cancel=delivery.cancel,
        )

    @torch.no_grad()
    def target_logprobs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Mean log probability of each target's tokens after its prompt (teacher forcing)."""
        device = next(self.model.parameters()).device
        encoded = encode_examples(self.tokenizer, pairs, self.max_length).to(device)
        return (-per_example_loss(self.model, encoded)).tolist()


def judged_answers(
    decoder: Decoder,
    examples: Sequence[tuple[str, str]],
    max_new_tokens: int,
    batch_size: int = 64,
) -> list[str]:
    """Greedy answers to (prompt, target) pairs, each batch capped at :func:`answer_cap` of
    all the targets (at most ``max_new_tokens``): how every judged answer is made."""
    if not examples:
        return []
    cap = answer_cap([t for _, t in examples], decoder.count_tokens, max_new_tokens)
    params = GenerationParams(max_new_tokens=cap)
    # Similar lengths in one batch: left padding to the longest prompt wastes less.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    texts: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        answers = decoder.decode([examples[i][0] for i in chunk], params)
        texts.update({i: a.text for i, a in zip(chunk, answers, strict=True)})
    return [texts[i] for i in range(len(examples))]


def _token_logprobs(
    tokenizer: PreTrainedTokenizerBase,
    tokens: list[int],
    logprobs: torch.Tensor,
    k: int,
    text: str,
) -> tuple[TokenLogprob, ...]:
    """Per kept token (those starting within ``text``, which a stop string may have cut):
    its log probability and the ``k`` likeliest tokens'. ``logprobs``: (steps, V)."""
    steps = torch.arange(len(tokens))
    chosen = logprobs[steps, torch.tensor(tokens, dtype=torch.long)].tolist()  # (kept,)
    top_values, top_ids = logprobs[: len(tokens)].topk(k, dim=-1)  # (kept, k) each
    names: dict[int, str] = {}

    def name(token_id: int) -> str:
        if token_id not in names:
            names[token_id] = str(tokenizer.decode([token_id]))
        return names[token_id]

    out: list[TokenLogprob] = []
    offset = 0
    for i, token_id in enumerate(tokens):
        if offset >= len(text):
            break  # the rest lies beyond the stop string
        top = tuple(
            (name(t), max(v, MIN_LOGPROB))
            for t, v in zip(top_ids[i].tolist(), top_values[i].tolist(), strict=True)
        )
        out.append(TokenLogprob(name(token_id), max(chosen[i], MIN_LOGPROB), top))
        offset += len(name(token_id))
    return tuple(out)
