"""IRT fits on synthetic data from known parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from teacher.irt import estimate_ability, fit_irt, likelihood_responses


def synthetic(seed: int, two_pl: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """20 members x 200 items from known theta, b (and a)."""
    rng = np.random.default_rng(seed)
    theta = np.linspace(-3, 3, 20)
    b = rng.uniform(-3, 3, 200)
    a = np.exp(rng.normal(0, 0.25, 200)) if two_pl else np.ones(200)
    p = 1 / (1 + np.exp(-a * (theta[:, None] - b)))
    return (rng.random(p.shape) < p).astype(float), theta, b, a


@pytest.mark.parametrize("model", ["1pl", "2pl"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_difficulty_and_ability(model: str, seed: int) -> None:
    y, theta, b, _ = synthetic(seed, model == "2pl")
    fit = fit_irt(y, model)
    assert fit.converged
    assert np.corrcoef(fit.b, b)[0, 1] > 0.9
    assert np.corrcoef(fit.theta, theta)[0, 1] > 0.95
    assert np.all(fit.se_b > 0) and np.all(np.isfinite(fit.se_b))
    json.dumps(fit.to_dict())


def test_missing_and_extreme_items_stay_finite() -> None:
    y, _, b, _ = synthetic(3, two_pl=True)
    y[:, 0], y[:, 1] = 1.0, 0.0  # everyone right / everyone wrong
    y[np.random.default_rng(0).random(y.shape) < 0.1] = np.nan
    fit = fit_irt(y, "2pl")
    for arr in (fit.b, fit.a, fit.theta, fit.se_b, fit.se_a, fit.se_theta):
        assert np.all(np.isfinite(arr))
    assert fit.b[0] < fit.b[1]
    assert np.corrcoef(fit.b[2:], b[2:])[0, 1] > 0.85


def test_one_pl_has_unit_discrimination() -> None:
    fit = fit_irt(synthetic(0, False)[0], "1pl")
    assert np.all(fit.a == 1.0) and np.all(fit.se_a == 0.0)


def test_estimate_ability_on_same_scale() -> None:
    y, _, _, _ = synthetic(1, two_pl=True)
    fit = fit_irt(y, "2pl")
    est = [estimate_ability(row, fit.b, fit.a)[0] for row in y]
    assert np.allclose(est, fit.theta, atol=1e-3)  # joint MAP fixes theta given items
    strong, se = estimate_ability(np.where(fit.b < 2.0, 1.0, 0.0), fit.b, fit.a)
    weak, _ = estimate_ability(np.where(fit.b < -2.0, 1.0, 0.0), fit.b, fit.a)
    assert weak < strong and 0 < se < 1


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        fit_irt(np.array([[0.0, 2.0]]))
    with pytest.raises(ValueError):
        fit_irt(np.zeros((2, 2)), model="3pl")
    with pytest.raises(ValueError):
        estimate_ability(np.zeros(3), np.zeros(2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fractional_responses_recover_difficulty(seed: int) -> None:
    """Beta-distributed responses with mean sigmoid(theta - b): the quasi-likelihood fit
    recovers b and theta as the 0/1 fit does."""
    rng = np.random.default_rng(seed)
    theta = np.linspace(-2, 2, 12)
    b = rng.uniform(-2, 2, 150)
    mean = 1 / (1 + np.exp(-(theta[:, None] - b)))
    y = rng.beta(8 * mean, 8 * (1 - mean))  # (12, 150), E[y] = mean
    fit = fit_irt(y, "1pl")
    assert np.corrcoef(fit.b, b)[0, 1] > 0.95
    assert np.corrcoef(fit.theta, theta)[0, 1] > 0.95


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_likelihood_ranks_buckets_every_member_fails(seed: int) -> None:
    """All members wrong on two buckets: correctness alone makes them equally hard; with the
    target likelihood as partial credit the likelier bucket comes out easier."""
    rng = np.random.default_rng(seed)
    members, per_bucket = 4, 40
    correct = np.zeros((members, 2 * per_bucket))
    ability = np.linspace(-0.5, 0.5, members)[:, None]  # stronger members: likelier targets
    logprob = np.concatenate(
        [
            -0.7 + ability + rng.normal(0, 0.2, (members, per_bucket)),  # easier: p ~ 0.5
            -2.5 + ability + rng.normal(0, 0.2, (members, per_bucket)),  # harder: p ~ 0.08
        ],
        axis=1,
    )
    flat = fit_irt(correct, "1pl").b
    assert abs(flat[:per_bucket].mean() - flat[per_bucket:].mean()) < 1e-6
    graded = fit_irt(likelihood_responses(correct, logprob), "1pl")
    easy, hard = graded.b[:per_bucket], graded.b[per_bucket:]
    assert easy.mean() + 1.0 < hard.mean()
    assert graded.theta[-1] > graded.theta[0]  # the likelier member is the abler


def test_likelihood_responses_keep_correctness_and_gaps() -> None:
    correct = np.array([[1.0, 0.0, 0.0, np.nan]])
    logprob = np.array([[-3.0, np.log(0.25), np.nan, -1.0]])
    y = likelihood_responses(correct, logprob)
    assert y[0, 0] == 1.0  # correct stays 1 whatever its likelihood
    assert y[0, 1] == pytest.approx(0.25)
    assert y[0, 2] == 0.0  # no likelihood recorded (an endpoint member): 0/1
    assert np.isnan(y[0, 3])  # not answered stays missing
    with pytest.raises(ValueError):
        likelihood_responses(correct, logprob[:, :2])
