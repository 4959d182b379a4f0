"""Field checks declared in dataclass metadata (learner.validation), and the messages of the
configs that use them."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from learner.builtin.config import BuiltinConfig
from learner.config import DifficultyConfig, LearnerConfig, LoraSettings, TeacherConfig
from learner.replay.config import ReplayConfig
from learner.validation import (
    NON_NEGATIVE,
    POSITIVE,
    above,
    at_least,
    check,
    failures,
    one_of,
    optional,
    validate,
    within,
)


@dataclass(frozen=True)
class Sample:
    count: int = field(default=1, metadata=POSITIVE)
    label: str = "free"  # no check
    share: float = field(default=0.5, metadata=within(0, 1, "[)"))
    mode: str = field(default="a", metadata=one_of(("a", "b")))
    limit: int | None = field(default=None, metadata=optional(at_least(2)))


def test_validate_raises_the_first_failure_in_field_order() -> None:
    validate(Sample())
    with pytest.raises(ValueError, match=r"^Sample\.count must be positive$"):
        validate(Sample(count=0, share=1.0))
    with pytest.raises(ValueError, match=r"^Sample\.share must be in \[0, 1\)$"):
        validate(Sample(share=1.0, mode="c"))
    with pytest.raises(ValueError, match=r"^Sample\.mode must be one of \('a', 'b'\)$"):
        validate(Sample(mode="c"))
    with pytest.raises(ValueError, match=r"^Sample\.limit must be >= 2$"):
        validate(Sample(limit=1))


def test_failures_lists_every_failure_in_the_given_form() -> None:
    assert failures(Sample()) == []
    assert failures(Sample(count=-1, share=-0.1, limit=0)) == [
        "count must be positive",
        "share must be in [0, 1)",
        "limit must be >= 2",
    ]
    assert failures(Sample(count=0), "{owner}: {name}={value} {says}") == [
        "Sample: count=0 must be positive"
    ]


def test_validate_stops_at_the_first_failure() -> None:
    """The checks after a failing one are not run."""
    broken = check(lambda value: 1 / 0, "is never checked")

    @dataclass(frozen=True)
    class Two:
        first: int = field(default=0, metadata=POSITIVE)
        second: int = field(default=0, metadata=broken)

    with pytest.raises(ValueError, match="first must be positive"):
        validate(Two())


@pytest.mark.parametrize(
    ("metadata", "passes", "fails", "says"),
    [
        (POSITIVE, [1e-9, 3], [0, -1, math.nan], "must be positive"),
        (NON_NEGATIVE, [0, 2.5], [-1e-9, math.nan], "must be >= 0"),
        (above(0), [1], [0, -2, math.nan], "must be > 0"),
        (at_least(1), [1, 7], [0.5, math.nan], "must be >= 1"),
        (within(0, 1), [0, 0.5, 1], [-0.1, 1.1, math.nan], "must be in [0, 1]"),
        (within(0, 1, "(]"), [1, 0.5], [0, 1.5], "must be in (0, 1]"),
        (within(0, 1, "()"), [0.5], [0, 1], "must be in (0, 1)"),
        (optional(within(0, 1, "(]"), "must be (0, 1] or None"), [None, 1], [0], None),
    ],
)
def test_checks(metadata: Any, passes: list[Any], fails: list[Any], says: str | None) -> None:
    (rule,) = metadata.values()
    assert all(rule.ok(value) for value in passes)
    assert not any(rule.ok(value) for value in fails)
    if says is not None:
        assert rule.says == says


def test_optional_keeps_or_replaces_the_words() -> None:
    assert next(iter(optional(NON_NEGATIVE).values())).says == "must be >= 0"
    assert next(iter(optional(NON_NEGATIVE, "must be None or >= 0").values())).says == (
        "must be None or >= 0"
    )


def test_within_rejects_unknown_brackets() -> None:
    with pytest.raises(ValueError, match="brackets"):
        within(0, 1, "[[")


# The messages of the configs, word for word (tests, logs and users read them).
MESSAGES: list[tuple[type, dict[str, Any], str]] = [
    (LoraSettings, {"r": 0}, "LoraSettings.r must be positive"),
    (LoraSettings, {"alpha": -1}, "LoraSettings.alpha must be positive"),
    (LoraSettings, {"dropout": 1.0}, "LoraSettings.dropout must be in [0, 1)"),
    (LoraSettings, {"capacity": 0.0}, "LoraSettings.capacity must be in (0, 1] or None"),
    (LearnerConfig, {"learning_rate": 0}, "LearnerConfig.learning_rate must be positive"),
    (LearnerConfig, {"lease_seconds": -1}, "LearnerConfig.lease_seconds must be positive"),
    (
        LearnerConfig,
        {"anchor_sampling": "x"},
        "LearnerConfig.anchor_sampling must be one of ('uniform', 'priority')",
    ),
    (LearnerConfig, {"distill_weight": -1}, "LearnerConfig.distill_weight must be >= 0"),
    (LearnerConfig, {"max_steps": -1}, "LearnerConfig.max_steps must be >= 0"),
    (
        LearnerConfig,
        {"focus_share": 0},
        "LearnerConfig: focus_share in (0, 1], anchor_share in [0, 1)",
    ),
    (
        LearnerConfig,
        {"focus_share": 0.8},
        "LearnerConfig: focus_share + anchor_share must be <= 1",
    ),
    (
        LearnerConfig,
        {"distill_first_weight": 0.5},
        "LearnerConfig: distill_first_tokens must be >= 0, distill_first_weight >= 1",
    ),
    (
        LearnerConfig,
        {"warmup_steps": -1},
        "LearnerConfig.num_threads and warmup_steps must be >= 0",
    ),
    (TeacherConfig, {"round_steps": 0}, "TeacherConfig.round_steps must be positive"),
    (TeacherConfig, {"rest_seconds": 0}, "TeacherConfig.rest_seconds must be positive"),
    (TeacherConfig, {"watch_probes": -1}, "TeacherConfig.watch_probes must be >= 0"),
    (DifficultyConfig, {"min_items": 0}, "DifficultyConfig.min_items must be positive"),
    (
        DifficultyConfig,
        {"irt_model": "3pl"},
        "DifficultyConfig.irt_model must be one of ('1pl', '2pl')",
    ),
    (
        DifficultyConfig,
        {"responses": "x"},
        "DifficultyConfig.responses must be one of ('likelihood', 'correctness')",
    ),
    (
        DifficultyConfig,
        {"idle_seconds": -1},
        "DifficultyConfig: refit_growth, idle_seconds and min_refit_seconds must be >= 0",
    ),
    (BuiltinConfig, {"hidden_size": 0}, "hidden_size must be > 0, got 0"),
    (BuiltinConfig, {"learning_rate": -0.5}, "learning_rate must be > 0, got -0.5"),
    (BuiltinConfig, {"grad_clip": -1.0}, "grad_clip must be >= 0, got -1.0"),
    (BuiltinConfig, {"num_threads": -2}, "num_threads must be >= 0, got -2"),
    (BuiltinConfig, {"eval_examples": -1}, "eval_examples must be >= 0"),
    (BuiltinConfig, {"max_position_embeddings": 100}, "max_position_embeddings must be >= 256"),
    (ReplayConfig, {"alpha": -1}, "invalid ReplayConfig: alpha must be >= 0"),
    (
        ReplayConfig,
        {"max_per_bucket": 0},
        "invalid ReplayConfig: max_per_bucket must be None or >= 1",
    ),
    (
        ReplayConfig,
        {"beta": 2, "eps": 0, "block_size": 48, "text_cache_bytes": -1},
        "invalid ReplayConfig: beta must be in [0, 1]; eps must be > 0; "
        "block_size must be a power of two >= 2; text_cache_bytes must be >= 0",
    ),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), MESSAGES)
def test_config_messages(cls: type, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        cls(**kwargs)


@pytest.mark.parametrize(
    "cls", [LoraSettings, LearnerConfig, TeacherConfig, DifficultyConfig, ReplayConfig]
)
def test_config_defaults_are_valid(cls: type) -> None:
    cls()
