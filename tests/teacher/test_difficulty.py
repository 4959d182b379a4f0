"""IRT fits on synthetic data from known parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from teacher.difficulty import estimate_ability, fit_irt


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
