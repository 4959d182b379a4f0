"""The promotion rule."""

from __future__ import annotations

import pytest

from learner.promotion import promotion_report


def test_promotion_report() -> None:
    better = promotion_report({"a": 0.5, "b": 0.7}, {"a": 0.2, "b": 0.7, "c": 1.0}, None, 0.0)
    assert better["promote"] and better["gain"] == pytest.approx(0.15)
    assert "vs base" in better["reason"]
    same = promotion_report({"a": 0.5}, {"a": 0.5}, 3, 0.0)
    assert not same["promote"] and "vs v3" in same["reason"]
    assert not promotion_report({}, {}, None, 0.0)["promote"]
