"""The general alignment suite: its contents, and its buckets made from a model's own answers."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

from sqlalchemy import Engine

from learner.evaluation.general_suite import (
    BUCKETS,
    SuiteAnswers,
    ensure_general_suite,
    load_general_suite,
    store_suite,
)
from learner.evaluation.graders import get_grader
from learner.evaluation.refusal import PatternDetector, RefusalConfig
from learner.model.chat import parse_messages
from learner.store.buckets import list_buckets, list_examples

IS_REFUSAL = PatternDetector(RefusalConfig())
CATEGORIES = {"weapons", "self-harm", "fraud", "malware", "privacy", "hate", "drugs",
              "violence", "theft"}  # fmt: skip


def test_the_suite_has_its_counts_and_categories() -> None:
    items = load_general_suite()
    labels = Counter(i.label for i in items)
    assert labels["harmful"] >= 200 and labels["benign"] >= 200
    assert {i.category for i in items if i.label == "harmful"} == CATEGORIES
    lookalikes = [i for i in items if i.category == "lookalike"]
    assert len(lookalikes) >= 50 and {i.label for i in lookalikes} == {"benign"}
    assert len({i.id for i in items}) == len(items)
    assert len({i.prompt for i in items}) == len(items)
    # Every request in three phrasings: ids are <category>-<topic>-<phrasing>.
    topics = Counter(i.id.rsplit("-", 1)[0] for i in items)
    assert set(topics.values()) == {3}


def _answered(answer_of: dict[str, str]) -> SuiteAnswers:
    items = load_general_suite()
    answers = [answer_of[i.label] for i in items]
    return SuiteAnswers(items, [i.prompt for i in items], answers, chat=False)


def test_a_model_that_answers_everything_is_not_called_a_refusal_on_lookalikes() -> None:
    """ "How do I kill a Python process?" answered is an answer: the detector's patterns are
    about refusing, not about the request's words."""
    for item in load_general_suite():
        answer = f"Sure! Here is how, step by step. You asked: {item.prompt} First, ..."
        assert not IS_REFUSAL(answer), item.prompt
        assert not IS_REFUSAL(f"To {item.prompt.lower()} you can start like this: ...")


def test_buckets_hold_the_models_answers_and_grade_behaviour(engine: Engine) -> None:
    answered = _answered({"harmful": "I'm sorry, but I can't help with that.",
                          "benign": "Sure, here is how to do it: ..."})  # fmt: skip
    answered.answers[0] = "   "  # an empty answer says nothing: left out
    stored = store_suite(engine, answered)
    assert stored == {BUCKETS["harmful"]: 215, BUCKETS["benign"]: 216}
    with engine.connect() as conn:
        buckets = {b.name: b for b in list_buckets(conn)}
        for name in BUCKETS.values():
            bucket = buckets[name]
            assert (bucket.kind, bucket.grader, bucket.format) == (
                "alignment",
                "refusal",
                "completion",
            )
            assert (
                0.35
                < bucket.probe_examples / (bucket.probe_examples + bucket.train_examples)
                < 0.65
            )
        harmful = list_examples(conn, buckets[BUCKETS["harmful"]].id, None, 1000)
    assert all(IS_REFUSAL(e.target) for e in harmful)
    grade = get_grader("refusal")
    assert grade("I cannot assist with this.", harmful[0].target)  # another refusal: kept
    assert not grade("Sure: mix the following...", harmful[0].target)  # answered: lost


def test_a_chat_models_suite_is_chat_and_made_once(
    engine: Engine, chat_model_dir: Path, tmp_path: Path
) -> None:
    created = ensure_general_suite(engine, chat_model_dir, "my-llama", tmp_path, max_new_tokens=4)
    assert sorted(created) == sorted(BUCKETS.values())
    with engine.connect() as conn:
        buckets = {b.name: b for b in list_buckets(conn)}
        example = list_examples(conn, buckets[BUCKETS["benign"]].id, None, 1)[0]
    assert buckets[BUCKETS["benign"]].format == "chat"
    turns = parse_messages(example.messages or "[]")
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[-1]["content"] == example.target
    assert example.prompt.startswith("<|begin_of_text|><|start_header_id|>user")
    provenance = json.loads((tmp_path / "suites" / "general.json").read_text())
    assert provenance["base_model"] == "my-llama" and provenance["chat_template"] is True
    assert provenance["generation"] == {"greedy": True, "max_new_tokens": 4}
    assert ensure_general_suite(engine, chat_model_dir, "my-llama", tmp_path) == []


def test_settings_choose_the_suite(tmp_path: Path, small_model_dir: str) -> None:
    from server.process.settings import Settings

    def kind(**values: object) -> str | None:
        return Settings(data_dir=tmp_path, **values).suite_kind()  # type: ignore[arg-type]

    assert kind() == "builtin"  # the default base model is builtin
    assert kind(base_model=small_model_dir) == "builtin"  # a builtin directory too
    assert kind(base_model=str(tmp_path)) == "general"
    assert kind(base_model=str(tmp_path), alignment_suite="false") is None
    assert kind(alignment_suite="true") == "builtin"
    assert kind(alignment_suite="general") == "general"


def test_cut_answers_are_probes_only(engine: Engine) -> None:
    """An answer cut at the token cap would teach the model to stop mid-sentence."""
    answered = _answered({"harmful": "I can't help with that.", "benign": "Sure, first you"})
    answered = dataclasses.replace(answered, finished=[i % 2 == 0 for i in range(432)])
    store_suite(engine, answered)
    with engine.connect() as conn:
        bucket = next(b for b in list_buckets(conn) if b.name == BUCKETS["benign"])
        train = list_examples(conn, bucket.id, "train", 1000)
    cut = {item.id for n, item in enumerate(answered.items) if n % 2}
    assert train and not {e.external_id for e in train} & cut
