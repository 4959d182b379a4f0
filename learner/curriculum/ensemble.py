"""The difficulty ensemble: models of different capability answer every example, and an
item-response model fitted to their answers (correctness, with the target likelihood as
partial credit for wrong answers) gives each example a difficulty (PUDF's
"artificial crowd"; the fit itself is the pure :mod:`teacher.irt`).

Members:
- the base model, and for ``builtin:<preset>`` its bootstrap checkpoints (weaker stages of
  the same model): ``LocalMember``;
- any local Hugging Face model directory: ``LocalMember``;
- any OpenAI-compatible endpoint, ``openai:<model>@<base url>``: ``EndpointMember``;
- a local model directory through vLLM (GPU), ``vllm:<dir>``: ``VllmMember``.

Every member is a :class:`DecoderMember`: the same judged answers through a decoder of
:mod:`learner.model.generate` (transformers, vLLM or HTTP).

``DifficultyScorer`` runs in a background thread of the learner process: it answers new
examples in batches, stores the answers (``difficulty_scores``) and refits the IRT model
(``item_difficulty``) whenever the answered set grew by ``refit_growth``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from sqlalchemy import Engine

from learner.builtin.model import builtin_checkpoints
from learner.config import DifficultyConfig
from learner.evaluation.graders import get_grader
from learner.model.decoders import OPENAI_PREFIX, HttpDecoder, VllmDecoder, parse_endpoint
from learner.model.generate import Decoder, TransformersDecoder, judged_answers
from learner.model.loading import load_base
from learner.store.db import write_transaction
from learner.store.difficulty import (
    MemberAnswer,
    PendingExample,
    answer_matrix,
    count_answered,
    group_by_grader,
    insert_answers,
    pending_examples,
    replace_item_fit,
)
from teacher.irt import fit_irt, likelihood_responses

log = logging.getLogger(__name__)
VLLM_PREFIX = "vllm:"  # a local model directory scored through vLLM (VllmMember)


class Member(Protocol):
    """An ensemble member: answers examples, each judged by its bucket's grader."""

    name: str

    def answer(self, items: Sequence[PendingExample]) -> list[MemberAnswer]: ...


class DecoderMember:
    """An ensemble member over a :class:`~learner.model.generate.Decoder`, opened at first
    use: its greedy answers (:func:`judged_answers`, the probes' cap) judged by the bucket's
    grader, and the target's mean log-likelihood where the decoder can score one."""

    def __init__(self, name: str, open_decoder: Callable[[], Decoder], max_new_tokens: int):
        self.name, self.max_new_tokens = name, max_new_tokens
        self._open = open_decoder
        self._decoder: Decoder | None = None

    def decoder(self) -> Decoder:
        if self._decoder is None:
            self._decoder = self._open()
        return self._decoder

    def answer(self, items: Sequence[PendingExample]) -> list[MemberAnswer]:
        decoder = self.decoder()
        likelihood = getattr(decoder, "target_logprobs", None)  # (prompt, target) -> mean
        out = []
        for grader, group in group_by_grader(items).items():
            grade = get_grader(grader)
            pairs = [(i.prompt, i.target) for i in group]
            texts = judged_answers(decoder, pairs, self.max_new_tokens)
            logprobs = likelihood(pairs) if likelihood else [None] * len(pairs)
            out += [
                MemberAnswer(i.id, self.name, bool(grade(text, i.target)), lp)
                for i, text, lp in zip(group, texts, logprobs, strict=True)
            ]
        return out


class LocalMember(DecoderMember):
    """A local Hugging Face causal LM directory, answered through transformers."""

    def __init__(
        self, name: str, path: Path, device: torch.device, max_new_tokens: int, max_length: int
    ) -> None:
        def open_decoder() -> Decoder:
            model, tokenizer = load_base(path, device)
            return TransformersDecoder(model.eval(), tokenizer, max_length)

        super().__init__(name, open_decoder, max_new_tokens)
        self.path = path


class EndpointMember(DecoderMember):
    """An OpenAI-compatible ``/completions`` endpoint, asked greedily (correctness only)."""

    def __init__(
        self, name: str, model: str, base_url: str, api_key: str, max_tokens: int, timeout: float
    ) -> None:
        decoder = HttpDecoder(model, base_url, api_key, timeout)
        super().__init__(name, lambda: decoder, max_tokens)


class VllmMember(DecoderMember):
    """A local model directory on a vLLM engine (GPU; loaded at first use, taking
    ``gpu_memory_utilization`` of the GPU): the answers of a :class:`LocalMember`."""

    def __init__(
        self, name: str, path: Path, max_new_tokens: int, gpu_memory_utilization: float = 0.3
    ) -> None:
        def open_decoder() -> Decoder:
            from vllm import LLM

            llm = LLM(model=str(path), gpu_memory_utilization=gpu_memory_utilization)
            return VllmDecoder(llm)

        super().__init__(name, open_decoder, max_new_tokens)
        self.path = path


@dataclass(frozen=True)
class EnsembleContext:
    """What building the members needs to know of the learner."""

    base_model: str  # the spec, e.g. ``builtin:tiny``
    model_dir: Path
    device: torch.device
    max_length: int


def build_members(config: DifficultyConfig, ctx: EnsembleContext) -> list[Member]:
    """The base model, the builtin bootstrap checkpoints, then the configured members."""

    def local(name: str, path: Path) -> LocalMember:
        return LocalMember(name, path, ctx.device, config.max_new_tokens, ctx.max_length)

    members: list[Member] = [local(f"base:{ctx.base_model}"[:200], ctx.model_dir)]
    if config.include_builtin_checkpoints:  # a builtin model's bootstrap stages, if any
        for ck in builtin_checkpoints(ctx.model_dir):
            members.append(local(f"{ctx.model_dir.parent.name}/{ck.name}", ck))
    for spec in config.members:
        if spec.startswith(VLLM_PREFIX):
            path = Path(spec.removeprefix(VLLM_PREFIX)).expanduser().resolve()
            members.append(VllmMember(spec, path, config.max_new_tokens))
        elif spec.startswith(OPENAI_PREFIX):
            model, url = parse_endpoint(spec)
            members.append(
                EndpointMember(
                    spec, model, url, config.api_key, config.max_new_tokens, config.request_timeout
                )
            )
        else:
            path = Path(spec).expanduser().resolve()
            if not (path / "config.json").is_file():
                raise ValueError(f"ensemble member {spec!r} is not a Hugging Face model directory")
            members.append(local(str(path), path))
    return members


class DifficultyScorer:
    """Answers new examples with every member, stores the answers, refits IRT as data grows."""

    def __init__(self, engine: Engine, members: Sequence[Member], config: DifficultyConfig):
        if not members:
            raise ValueError("the difficulty ensemble needs at least one member")
        self.engine, self.members, self.config = engine, list(members), config
        self.names = [m.name for m in self.members]
        self.cursor = 0  # examples up to this id have been offered to every member
        self.fitted_items = 0
        self.fits = 0  # IRT fits stored so far: readers re-read difficulties when it moves
        self._fitted_at = -float("inf")
        # Answers stored since the last fit (or answers of an earlier run): only then can a
        # refit be due, so an idle scorer does not count the answers at every poll.
        self._unfitted = True
        self.summary: dict[str, Any] = {"members": self.names, "fit": None}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def score_batch(self) -> int:
        """Answer the next batch of pending examples; returns how many were pending."""
        with self.engine.connect() as conn:
            pending = pending_examples(conn, self.names, self.cursor, self.config.batch_size)
        if not pending:
            return 0
        answers: list[MemberAnswer] = []
        for member in self.members:
            todo = [p for p in pending if member.name in p.missing]
            if not todo:
                continue
            try:
                answers += member.answer(todo)
            except (OSError, ValueError, KeyError) as exc:  # an endpoint down or answering junk
                log.warning(
                    "ensemble member %s failed on %d examples: %s", member.name, len(todo), exc
                )
        with write_transaction(self.engine) as conn:
            insert_answers(conn, answers)
        self._unfitted = self._unfitted or bool(answers)
        self.cursor = pending[-1].id
        return len(pending)

    def refit_due(self, answered: int, caught_up: bool) -> bool:
        """While examples keep coming, refit when their number grew by ``refit_growth``;
        once every example is answered, fit the last few too."""
        if answered < self.config.min_items or answered == self.fitted_items:
            return False
        grown = answered > self.fitted_items * (1 + self.config.refit_growth)
        # A trickle of new examples would otherwise cause a refit after every small batch.
        rested = time.monotonic() - self._fitted_at >= self.config.min_refit_seconds
        return self.fitted_items == 0 or grown or (caught_up and rested)

    def maybe_refit(self, caught_up: bool = False) -> bool:
        """Refit the IRT model if it is due (see ``refit_due``); returns whether it did."""
        if not self._unfitted:
            return False
        with self.engine.connect() as conn:
            if not self.refit_due(count_answered(conn, self.names), caught_up):
                return False
            matrix = answer_matrix(conn, self.names)
        started = time.perf_counter()
        responses = np.where(matrix.mask, matrix.correct, np.nan)  # (M, N)
        if self.config.responses == "likelihood":
            responses = likelihood_responses(responses, matrix.mean_logprob)
        fit = fit_irt(responses, self.config.irt_model)
        two_pl = self.config.irt_model == "2pl"
        with write_transaction(self.engine) as conn:
            replace_item_fit(
                conn, matrix.example_ids, fit.b, fit.se_b, fit.a if two_pl else None, fit.model
            )
        self.fitted_items = len(matrix.example_ids)
        self._fitted_at = time.monotonic()
        self._unfitted = False
        self.fits += 1
        self.cursor = 0  # one rescan after each fit catches examples that committed late
        self.summary = {
            "members": self.names,
            "fit": {
                "model": fit.model,
                "responses": self.config.responses,
                "items": self.fitted_items,
                "converged": fit.converged,
                "seconds": round(time.perf_counter() - started, 3),
                "member_ability": {n: float(t) for n, t in zip(self.names, fit.theta, strict=True)},
                "member_accuracy": {
                    n: float(matrix.correct[i][matrix.mask[i]].mean())
                    if matrix.mask[i].any()
                    else None
                    for i, n in enumerate(self.names)
                },
            },
        }
        log.info(
            "refit %s IRT on %d items x %d members", fit.model, self.fitted_items, len(self.names)
        )
        return True

    def run_once(self) -> bool:
        """One batch and a refit if due; returns whether there was work."""
        scored = self.score_batch()
        return self.maybe_refit(caught_up=scored == 0) or scored > 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # keep scoring alive; the learner must not die of it
                log.exception("difficulty scoring failed; retrying")
                busy = False
            if not busy:
                self._stop.wait(self.config.idle_seconds)

    def start(self) -> None:
        """Score in a background thread until ``stop``."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="difficulty-scorer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def start_scorer(
    engine: Engine, config: DifficultyConfig, context: EnsembleContext
) -> DifficultyScorer | None:
    """A started background scorer, or None when scoring is off or misconfigured (logged:
    a bad member must not stop the training)."""
    if not config.enabled:
        return None
    try:
        members = build_members(config, context)
    except ValueError as exc:
        log.error("difficulty scoring is off: %s", exc)
        return None
    scorer = DifficultyScorer(engine, members, config)
    scorer.start()
    return scorer
