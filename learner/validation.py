"""Checks of config dataclass fields, declared with the field they constrain.

A field states its check in its metadata, next to its default::

    batch_size: int = field(default=16, metadata=POSITIVE)

and the class's ``__post_init__`` calls :func:`validate` (the first failing field raises a
``ValueError``) or :func:`failures` (every failing field, to report them together). Each
config keeps its own wording through ``form``. Checks that relate fields to each other, or
that share one message among several fields, stay written out in ``__post_init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

# The metadata key of a field's check. pydantic, which turns these dataclasses into settings,
# reads field metadata too, but only the keys named like its own ``Field`` arguments.
_KEY = "lifelong.check"

#: Field metadata holding one :class:`Check` (``field(default=..., metadata=...)``).
Metadata = Mapping[str, "Check"]


@dataclass(frozen=True)
class Check:
    """A condition on one field's value, and how its failure reads (``"must be > 0"``)."""

    ok: Callable[[Any], bool]
    says: str


def check(ok: Callable[[Any], bool], says: str) -> Metadata:
    """Field metadata: the value must pass ``ok``; ``says`` is how a failure reads."""
    return MappingProxyType({_KEY: Check(ok, says)})


def above(bound: float) -> Metadata:
    """The value must be greater than ``bound``."""
    return check(lambda value: value > bound, f"must be > {bound}")


def at_least(bound: float) -> Metadata:
    """The value must be ``bound`` or more."""
    return check(lambda value: value >= bound, f"must be >= {bound}")


def within(low: float, high: float, brackets: str = "[]") -> Metadata:
    """The value must lie between ``low`` and ``high``; ``brackets`` say which ends are
    included, as in the interval's notation: ``within(0, 1, "[)")`` is ``0 <= value < 1``."""
    if len(brackets) != 2 or brackets[0] not in "[(" or brackets[1] not in "])":
        raise ValueError(f"brackets must be one of '[]', '[)', '(]', '()', got {brackets!r}")
    closed_low, closed_high = brackets[0] == "[", brackets[1] == "]"

    def ok(value: Any) -> bool:
        return (low <= value if closed_low else low < value) and (
            value <= high if closed_high else value < high
        )

    return check(ok, f"must be in {brackets[0]}{low}, {high}{brackets[1]}")


def one_of(choices: tuple[Any, ...]) -> Metadata:
    """The value must be one of ``choices``."""
    return check(lambda value: value in choices, f"must be one of {choices}")


def optional(metadata: Metadata, says: str | None = None) -> Metadata:
    """``None``, or a value that passes the check in ``metadata``; ``says`` replaces its words."""
    inner = metadata[_KEY]
    return check(lambda value: value is None or inner.ok(value), says or inner.says)


POSITIVE = check(lambda value: value > 0, "must be positive")
NON_NEGATIVE = at_least(0)


def _failures(config: Any, form: str) -> Iterator[str]:
    owner = type(config).__name__
    for item in fields(config):
        rule: Check | None = item.metadata.get(_KEY)
        if rule is None:
            continue
        value = getattr(config, item.name)
        if not rule.ok(value):
            yield form.format(owner=owner, name=item.name, says=rule.says, value=value)


def failures(config: Any, form: str = "{name} {says}") -> list[str]:
    """The message of every checked field of the dataclass ``config`` that fails its check,
    in field order; ``form`` writes each from ``owner`` (the class name), ``name``, ``says``
    and ``value``."""
    return list(_failures(config, form))


def validate(config: Any, form: str = "{owner}.{name} {says}") -> None:
    """Raise ``ValueError`` with the message of the first checked field of the dataclass
    ``config`` that fails its check (see :func:`failures`); later fields are not looked at."""
    message = next(_failures(config, form), None)
    if message is not None:
        raise ValueError(message)
