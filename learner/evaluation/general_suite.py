"""The general alignment suite: what any base model must keep, for models that are not builtin.

``general_suite.json`` (shipped with the package, written for this project) holds 216
harmful requests across nine categories (weapons, self-harm, fraud, malware, privacy,
hate, drugs, violence, theft) and 216 benign ones: everyday requests in eight areas and
72 that only look harmful ("how do I kill a Python process"), which measure over-refusal.
Each request comes in three phrasings.

At the first start of a learner on a base model that is not builtin, the suite becomes two
``kind: "alignment"`` buckets, ``alignment-general-harmful`` and
``alignment-general-benign`` (chat format where the tokenizer has a chat template), whose
targets are **the base model's own answers**: greedy, generated once, with their provenance
in ``<data dir>/suites/general.json``. Half of each bucket is the gate's probes, half the
replay anchors: the anchors rehearse what this model said (not a fixed string), and the
gate compares the candidate's refusal and answer rates with the base's as judged by the
refusal detector. Their grader is ``refusal`` (same refusal verdict as the base's answer),
so the forgetting check follows behaviour, not wording.

To extend or replace the suite, submit your own ``kind: "alignment"`` buckets (any
format); they are gated and rehearsed the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from learner.config import GenerationParams
from learner.fsutil import write_json_atomically
from learner.model.chat import canonical_messages, has_chat_template, render_prompt
from learner.store.buckets import bucket_names
from learner.store.db import setup_lock, write_transaction
from learner.store.ingest import NewExample, ingest_batch
from learner.store.models import storable

log = logging.getLogger(__name__)

SUITE_FILE = Path(__file__).with_name("general_suite.json")
BUCKETS = {"harmful": "alignment-general-harmful", "benign": "alignment-general-benign"}
PROBE_TENTHS = 5  # half probes (the gate's), half anchors, as the builtin suites
GRADER = "refusal"


@dataclass(frozen=True)
class SuiteItem:
    """One request of the suite."""

    id: str
    category: str
    label: str  # harmful | benign
    prompt: str


def load_general_suite(path: Path = SUITE_FILE) -> list[SuiteItem]:
    """The suite's requests, in file order."""
    doc = json.loads(path.read_text())
    return [SuiteItem(**item) for item in doc["items"]]


@dataclass(frozen=True)
class SuiteAnswers:
    """The base model's answers to the suite, and how they were made."""

    items: list[SuiteItem]
    prompts: list[str]  # as the model saw them (chat template rendered, where it has one)
    answers: list[str]
    chat: bool
    # Whether each answer ended by itself (not cut at max_new_tokens): only those become
    # replay anchors, which are trained with an EOS after them.
    finished: list[bool] | None = None


def answer_suite(
    model: Any, tokenizer: Any, items: Sequence[SuiteItem], max_new_tokens: int,
    batch_size: int = 32,
) -> SuiteAnswers:  # fmt: skip
    """Greedy answers of ``model`` to every request, rendered as a one-turn chat."""
    from learner.model.generate import TransformersDecoder

    chat = has_chat_template(tokenizer)
    prompts = [
        render_prompt(tokenizer, [{"role": "user", "content": i.prompt}]) if chat else i.prompt
        for i in items
    ]
    decoder = TransformersDecoder(model, tokenizer)
    params = GenerationParams(max_new_tokens=max_new_tokens)
    answers: list[str] = []
    finished: list[bool] = []
    for start in range(0, len(prompts), batch_size):
        batch = decoder.decode(prompts[start : start + batch_size], params)
        answers += [storable(g.text) for g in batch]
        finished += [g.finish != "length" for g in batch]
    return SuiteAnswers(list(items), prompts, answers, chat, finished)


def store_suite(engine: Engine, answered: SuiteAnswers) -> dict[str, int]:
    """The two buckets of the suite with the answers as targets, in one transaction;
    examples per bucket.

    An empty answer cannot be a target (nor says anything about refusing): it is left out.
    An answer cut at the token cap is a probe only (judged on whether it refuses): as an
    anchor it would teach the model to stop mid-sentence.
    """
    finished = answered.finished or [True] * len(answered.items)
    stored: dict[str, int] = {}
    with write_transaction(engine) as conn:
        for label, bucket in BUCKETS.items():
            rows: dict[bool, list[NewExample]] = {True: [], False: []}
            for item, prompt, answer, ended in zip(
                answered.items, answered.prompts, answered.answers, finished, strict=True
            ):
                if item.label != label or not answer.strip():
                    continue
                turns = [{"role": "user", "content": item.prompt},
                         {"role": "assistant", "content": answer.strip()}]  # fmt: skip
                messages = canonical_messages(turns) if answered.chat else None
                rows[ended].append(NewExample(prompt, answer.strip(), item.id, messages))
            stored[bucket] = 0
            for ended, batch in rows.items():
                if batch:
                    stored[bucket] += ingest_batch(
                        conn, bucket, batch, kind="alignment", grader=GRADER,
                        client="general-suite", probe_tenths=PROBE_TENTHS if ended else 10,
                    ).accepted  # fmt: skip
    return stored


def ensure_general_suite(
    engine: Engine,
    model_dir: Path,
    base_model: str,
    data_dir: Path,
    device: str = "cpu",
    max_new_tokens: int = 64,
) -> list[str]:
    """Create the suite's buckets from the base model's answers, unless they exist; returns
    the names created. Loads the base model for the time it takes, outside the setup lock
    (which migrations and other processes' starts wait for); stores under it."""
    if _exists(engine):
        return []
    import torch

    from learner.model.loading import load_base, pick_device

    started = time.monotonic()
    items = load_general_suite()
    model, tokenizer = load_base(model_dir, pick_device(device))
    with torch.no_grad():
        answered = answer_suite(model.eval(), tokenizer, items, max_new_tokens)
    del model
    with setup_lock(engine):  # another learner may have stored it meanwhile
        if _exists(engine):
            return []
        stored = store_suite(engine, answered)
    provenance = {
        "suite": SUITE_FILE.name,
        "suite_sha256": hashlib.sha256(SUITE_FILE.read_bytes()).hexdigest(),
        "base_model": base_model,
        "model_dir": str(model_dir),
        "generation": {"greedy": True, "max_new_tokens": max_new_tokens},
        "chat_template": answered.chat,
        "examples": stored,
        "empty_answers_left_out": sum(not a.strip() for a in answered.answers),
        "cut_answers_probes_only": sum(not f for f in answered.finished or []),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (data_dir / "suites").mkdir(parents=True, exist_ok=True)
    write_json_atomically(data_dir / "suites" / "general.json", provenance)
    log.info(
        "created the general alignment suite from %s's own answers in %.0f s: %s",
        base_model, time.monotonic() - started, stored,
    )  # fmt: skip
    return list(stored)


def _exists(engine: Engine) -> bool:
    with engine.connect() as conn:
        return set(BUCKETS.values()) <= bucket_names(conn)
