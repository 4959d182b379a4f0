"""Metrics over per-probe answers and the accuracy matrix, against hand-computed numbers."""

from __future__ import annotations

import pytest
from scipy import stats

from learner.evaluation.measures import (
    clopper_pearson_lower,
    compare_paired,
    lineage_of,
    negative_flip_rate,
    version_metrics,
)


def test_compare_paired_counts_flips_and_tests_them_exactly() -> None:
    reference = {i: i < 8 for i in range(10)}  # 8 of 10 right
    candidate = {i: i < 2 for i in range(10)}  # 2 of 10 right: ids 2..7 flipped to wrong
    candidate[99] = True  # answered by one model only: ignored
    c = compare_paired(reference, candidate)
    assert (c.n, c.lost, c.gained) == (10, 6, 0)
    assert c.reference_accuracy == pytest.approx(0.8)
    assert c.candidate_accuracy == pytest.approx(0.2)
    assert c.drop == pytest.approx(0.6)
    assert c.p_value == pytest.approx(0.5**6)  # all 6 discordant pairs went the bad way
    # q_lo = 5% quantile of Beta(6, 1), whose CDF is x**6: 0.05 ** (1/6) = 0.6070;
    # drop bound = d * (2 q_lo - 1) / n = 6 * 0.2140 / 10 = 0.1284.
    assert c.drop_lower_bound == pytest.approx(6 * (2 * 0.05 ** (1 / 6) - 1) / 10)
    assert c.drop_lower_bound == pytest.approx(0.1284, abs=1e-4)
    assert c.to_dict()["lost"] == 6


def test_compare_paired_mixed_flips() -> None:
    reference = {1: True, 2: True, 3: True, 4: False, 5: True}
    candidate = {1: False, 2: False, 3: False, 4: True, 5: True}
    c = compare_paired(reference, candidate)
    assert (c.lost, c.gained) == (3, 1)
    assert c.drop == pytest.approx(2 / 5)
    # P(X >= 3), X ~ Bin(4, 1/2) = (4 + 1) / 16
    assert c.p_value == pytest.approx(5 / 16)
    q_lo = stats.beta.ppf(0.05, 3, 2)
    assert c.drop_lower_bound == pytest.approx(4 * (2 * q_lo - 1) / 5)
    assert c.drop_lower_bound < 0  # not significant: the bound allows an improvement


def test_compare_paired_without_flips_or_common_probes() -> None:
    same = compare_paired({1: True, 2: False}, {1: True, 2: False})
    assert (same.drop, same.p_value, same.drop_lower_bound) == (0.0, 1.0, 0.0)
    gained_only = compare_paired({1: False, 2: False}, {1: True, 2: True})
    assert gained_only.p_value == 1.0 and gained_only.drop == pytest.approx(-1.0)
    assert gained_only.drop_lower_bound == pytest.approx(-1.0)  # q_lo = 0 when lost == 0
    empty = compare_paired({1: True}, {2: True})
    assert empty.n == 0 and empty.reference_accuracy == 0.0 and empty.candidate_accuracy == 0.0
    assert (empty.drop, empty.p_value, empty.drop_lower_bound) == (0.0, 1.0, 0.0)


def test_negative_flip_rate() -> None:
    reference = {1: True, 2: True, 3: False, 4: True}
    candidate = {1: False, 2: True, 3: True, 4: True, 5: False}
    assert negative_flip_rate(reference, candidate) == (0.25, 1, 4)
    assert negative_flip_rate({}, candidate) == (0.0, 0, 0)


def test_clopper_pearson_lower() -> None:
    assert clopper_pearson_lower(0, 10, 0.05) == 0.0
    # Known value: the two-sided 90% Clopper-Pearson interval of 5/10 is (0.2224, 0.7776).
    assert clopper_pearson_lower(5, 10, 0.05) == pytest.approx(0.2224, abs=1e-4)
    assert clopper_pearson_lower(5, 10, 0.05) == pytest.approx(stats.beta.ppf(0.05, 5, 6))
    assert clopper_pearson_lower(4, 4, 0.05) == pytest.approx(0.05**0.25)  # Beta(4, 1)
    with pytest.raises(ValueError, match="k <= n"):
        clopper_pearson_lower(5, 4, 0.05)


# R[version, bucket]; lineage None (base) -> 1 -> 2 -> 3. Version 4 is on another branch.
MATRIX: dict[int | None, dict[str, float]] = {
    None: {"a": 0.2, "b": 0.1, "c": 0.5, "d": 0.9},
    1: {"a": 0.8, "c": 0.6},
    2: {"a": 0.7, "b": 0.9},
    3: {"a": 0.6, "b": 0.8, "c": 0.7, "d": 0.5},
    4: {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0},
}


def test_version_metrics_by_hand() -> None:
    m = version_metrics(MATRIX, [None, 1, 2, 3])
    # average: (0.6 + 0.8 + 0.7 + 0.5) / 4 = 0.65
    assert m.average_accuracy == pytest.approx(0.65)
    assert m.buckets == 4
    # BWT against the first non-base version evaluated on each bucket:
    # a: 0.6 - R[1,a] 0.8 = -0.2; b: 0.8 - R[2,b] 0.9 = -0.1; c: 0.7 - R[1,c] 0.6 = +0.1;
    # d: only the base evaluated it before, excluded. (-0.2 - 0.1 + 0.1) / 3 = -0.0667
    assert m.backward_transfer == pytest.approx(-0.2 / 3)
    # forgetting: a: max(0.2, 0.8, 0.7) - 0.6 = 0.2; b: max(0.1, 0.9) - 0.8 = 0.1;
    # c: max(0.5, 0.6) - 0.7 < 0 -> 0; d: base 0.9 - 0.5 = 0.4. Mean (0.2+0.1+0+0.4)/4 = 0.175
    assert m.forgetting_by_bucket == pytest.approx({"a": 0.2, "b": 0.1, "c": 0.0, "d": 0.4})
    assert m.forgetting == pytest.approx(0.175)  # version 4 (other branch) never counts
    assert m.to_dict()["buckets"] == 4


def test_version_metrics_shorter_lineages() -> None:
    m = version_metrics(MATRIX, [None, 1, 2])
    # average (0.7 + 0.9) / 2; BWT: a 0.7 - 0.8 (b has only the base before): -0.1;
    # forgetting: a 0.8 - 0.7 = 0.1, b max(0, 0.1 - 0.9) = 0 -> 0.05
    assert m.average_accuracy == pytest.approx(0.8)
    assert m.backward_transfer == pytest.approx(-0.1)
    assert m.forgetting == pytest.approx(0.05)
    skipping = version_metrics(MATRIX, [None, 1, 3])  # version 2 not an ancestor
    assert skipping.forgetting_by_bucket["b"] == 0.0  # only the base's 0.1 before
    base = version_metrics(MATRIX, [None])
    assert base.average_accuracy == pytest.approx(0.425)
    assert base.backward_transfer is None and base.forgetting is None
    unknown = version_metrics(MATRIX, [None, 9])
    assert unknown.average_accuracy is None and unknown.buckets == 0


def test_lineage_of() -> None:
    parents: dict[int, int | None] = {1: None, 3: 1, 7: 3, 8: 5, 10: 11, 11: 10}
    assert lineage_of(7, parents) == [None, 1, 3, 7]
    assert lineage_of(None, parents) == [None]
    assert lineage_of(8, parents) == [None, 5, 8]  # 5's parent is unknown: base at the root
    assert lineage_of(10, parents) == [None, 11, 10]  # a cycle ends the walk
