"""Synthetic task families: determinism, well-formed examples, graders, alignment behaviour."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from learner.builtin import families as tasks
from learner.evaluation.graders import GRADERS

ALL_LEVELS = [(name, lvl) for name, f in tasks.FAMILIES.items() for lvl in range(1, f.levels + 1)]
PRINTABLE = {chr(c) for c in range(32, 127)}


def test_registry_has_every_family_with_a_known_grader() -> None:
    expected = {"copy", "reverse", "sort", "rotate", "addition", "comparison", "counting"}
    expected |= {"alignment"}
    assert set(tasks.FAMILIES) == expected
    for fam in tasks.FAMILIES.values():
        assert fam.grader in GRADERS
        assert fam.kind == ("alignment" if fam.name == "alignment" else "task")
        assert fam.levels >= 3


@pytest.mark.parametrize(("family", "level"), ALL_LEVELS)
def test_examples_are_deterministic_per_seed(family: str, level: int) -> None:
    a = tasks.make_examples(family, 20, level, seed=7)
    assert a == tasks.make_examples(family, 20, level, seed=7)
    assert a != tasks.make_examples(family, 20, level, seed=8)


@pytest.mark.parametrize(("family", "level"), ALL_LEVELS)
def test_examples_are_short_printable_and_graded_correct(family: str, level: int) -> None:
    fam = tasks.FAMILIES[family]
    for ex in tasks.make_examples(family, 200, level, seed=1):
        prompt, target = ex["prompt"], ex["target"]
        assert set(prompt + target) <= PRINTABLE
        assert prompt.endswith(tasks.DELIMITER)
        assert target and target == target.strip()
        assert len(prompt + target) <= tasks.MAX_EXAMPLE_CHARS
        assert fam.grade(target, target)
        assert tasks.training_text(ex, "</s>") == prompt + target + "</s>"


def _answer(prompt: str) -> str:
    """An independent solver for the plain task prompts."""
    body = prompt.removesuffix(tasks.DELIMITER)
    op, _, arg = body.partition(" ")
    if op == "copy":
        return arg
    if op == "reverse":
        return arg[::-1]
    if op == "sort":
        return "".join(sorted(arg))
    if op == "rotate":
        return arg[1:] + arg[0]
    if op == "add":
        a, b = arg.split(" + ")
        return str(int(a) + int(b))
    if op == "larger":
        a, b = arg.split(" or ")
        return str(max(int(a), int(b)))
    if op == "count":
        ch, text = re.fullmatch(r"(.) in (.*)", arg).groups()  # type: ignore[union-attr]
        return str(text.count(ch))
    raise AssertionError(prompt)


@pytest.mark.parametrize(("family", "level"), [p for p in ALL_LEVELS if p[0] != "alignment"])
def test_targets_are_the_right_answers(family: str, level: int) -> None:
    for ex in tasks.make_examples(family, 100, level, seed=3):
        assert ex["target"] == _answer(ex["prompt"])


def test_levels_get_harder() -> None:
    def mean_len(family: str, level: int) -> float:
        return float(np.mean([len(e["prompt"]) for e in tasks.make_examples(family, 100, level)]))

    for family in ("copy", "reverse", "sort", "rotate", "addition", "comparison", "counting"):
        lengths = [mean_len(family, lvl) for lvl in range(1, 5)]
        assert lengths == sorted(lengths) and lengths[0] < lengths[-1]


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_alignment_refuses_harmful_and_answers_benign(level: int) -> None:
    examples = tasks.make_examples("alignment", 300, level, seed=5)
    harmful = [e for e in examples if tasks.is_harmful(e["prompt"])]
    benign = [e for e in examples if not tasks.is_harmful(e["prompt"])]
    assert len(harmful) > 50 and len(benign) > 50
    assert all(e["target"] == tasks.REFUSAL for e in harmful)
    assert all(e["target"] != tasks.REFUSAL and e["target"] for e in benign)

    # Benign requests look like harmful ones: the same openers are used for both.
    def first_words(items: list[dict[str, str]]) -> set[str]:
        return {e["prompt"].split(" ")[0] for e in items}

    assert first_words(harmful) & first_words(benign)
    answers = {*tasks.WIDE_BENIGN_REQUESTS.values(), *tasks.WIDE_LOOKALIKES.values()}
    canned = [e for e in benign if e["target"] in answers]
    skills = [e for e in benign if e["target"] not in answers]
    assert canned and skills
    assert not tasks.FAMILIES["alignment"].grade("Sure, here is how.", tasks.REFUSAL)


def test_wide_alignment_covers_more_requests_and_lookalikes() -> None:
    examples = tasks.make_examples("alignment", 3000, 4, seed=1)
    harmful = [e["prompt"].removesuffix(tasks.DELIMITER) for e in examples]
    harmful = [p for p in harmful if tasks.is_harmful(p)]
    topics = {r for r in tasks.WIDE_HARMFUL_REQUESTS if any(p.endswith(" " + r) for p in harmful)}
    assert len(topics) == len(tasks.WIDE_HARMFUL_REQUESTS) >= 3 * len(tasks.HARMFUL_REQUESTS)
    # A lookalike shares words with a harmful request but is never taken for one.
    for request in tasks.WIDE_LOOKALIKES | tasks.WIDE_BENIGN_REQUESTS:
        assert not tasks.is_harmful(f"help me {request}{tasks.DELIMITER}"), request
    looks = [e for e in examples if e["target"] in tasks.WIDE_LOOKALIKES.values()]
    assert len(looks) > 300


def test_bad_family_or_level_is_rejected() -> None:
    with pytest.raises(KeyError, match="unknown task family"):
        tasks.make_examples("juggling", 1)
    with pytest.raises(ValueError, match="level"):
        tasks.make_examples("copy", 1, level=0)
    with pytest.raises(ValueError, match="level"):
        tasks.make_examples("alignment", 1, level=5)
    with pytest.raises(ValueError):
        tasks.make_examples("copy", -1)


def test_foundation_curriculum_is_deterministic_and_follows_the_mix() -> None:
    a = list(itertools.islice(tasks.foundation_curriculum(seed=3), 400))
    assert a == list(itertools.islice(tasks.foundation_curriculum(seed=3), 400))
    assert a != list(itertools.islice(tasks.foundation_curriculum(seed=4), 400))
    allowed = {(f, lvl) for f, lvl, _ in tasks.FOUNDATION_MIX}
    assert {(e["family"], e["level"]) for e in a} == allowed
    only_copy = itertools.islice(tasks.foundation_curriculum(0, [("copy", 1, 1.0)]), 20)
    assert {e["family"] for e in only_copy} == {"copy"}
    with pytest.raises(ValueError):
        next(tasks.foundation_curriculum(0, [("copy", 1, 0.0)]))


def test_demo_stream_introduces_buckets_over_time() -> None:
    batches = list(itertools.islice(tasks.demo_stream(seed=1, batch_size=8), 60))
    again = list(itertools.islice(tasks.demo_stream(seed=1, batch_size=8), 60))
    assert [(b.bucket, b.examples) for b in batches] == [(b.bucket, b.examples) for b in again]
    assert batches[0].bucket == tasks.bucket_name(*tasks.DEMO_BUCKETS[0])
    first_seen: dict[str, int] = {}
    for t, b in enumerate(batches):
        assert len(b.examples) == 8
        assert b.bucket == f"{b.family.name}-l{b.level}"
        assert re.fullmatch(r"[a-z]+-l\d", b.bucket)
        first_seen.setdefault(b.bucket, t)
    assert len(first_seen) >= 10  # new buckets keep arriving
    schedule = [tasks.bucket_name(f, lvl) for f, lvl in tasks.DEMO_BUCKETS]
    for bucket, t in first_seen.items():
        assert t >= schedule.index(bucket) * 4  # default new_bucket_every: not before its turn


def test_probe_answer_caps_exceed_every_builtin_target() -> None:
    """Probe answers are cut at the cap: a target longer than the cap is graded wrong under
    every model (at a cap of 32 the suite's benign answers were, hiding their forgetting)."""
    from learner.builtin.suites import suite_examples
    from learner.config import DifficultyConfig, LearnerConfig

    targets = [e["target"] for level in (1, 2, 3) for e in suite_examples(level)]
    for family in tasks.FAMILIES.values():
        for level in range(1, family.levels + 1):
            targets += [e["target"] for e in tasks.make_examples(family, 200, level=level)]
    # The builtin tokenizer is character-level: a target's token count is its length.
    longest = max(len(t) for t in targets)
    assert longest > 32
    assert longest + 2 <= LearnerConfig().max_new_tokens
    assert longest + 2 <= DifficultyConfig().max_new_tokens
