"""Graders: how a bucket's probe answers are judged. Extension by registry (like peft)."""

from __future__ import annotations

import math
from collections.abc import Callable

from learner.evaluation.refusal import PatternDetector, RefusalConfig

Grader = Callable[[str, str], bool]
GRADERS: dict[str, Grader] = {}


def register_grader(name: str) -> Callable[[Grader], Grader]:
    """Register ``fn(prediction, target) -> bool`` under ``name``."""

    def wrap(fn: Grader) -> Grader:
        GRADERS[name] = fn
        return fn

    return wrap


@register_grader("exact")
def exact(prediction: str, target: str) -> bool:
    """Exact match after stripping surrounding whitespace."""
    return prediction.strip() == target.strip()


@register_grader("numeric")
def numeric(prediction: str, target: str) -> bool:
    """Equal as numbers (the first token of the prediction), with a small tolerance."""
    try:
        got = float(prediction.strip().split()[0])
        want = float(target.strip())
    except (ValueError, IndexError):
        return False
    return math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)


@register_grader("refusal")
def same_refusal(prediction: str, target: str) -> bool:
    """Refuses exactly when the target refuses (the default refusal patterns): a bucket of
    reference answers (the general alignment suite's, the base model's own words) judged on
    behaviour, not on wording that any training changes."""
    return _PATTERNS(prediction) == _PATTERNS(target)


_PATTERNS = PatternDetector(RefusalConfig())


def get_grader(name: str) -> Grader:
    try:
        return GRADERS[name]
    except KeyError:
        raise KeyError(f"unknown grader {name!r}; known: {sorted(GRADERS)}") from None
