"""Item difficulty from an ensemble ("artificial crowd", PUDF) via item response theory.

An ensemble of models of different capability answers each item; fitting a 1PL (Rasch) or
2PL model to the members x items 0/1 matrix gives item difficulty b_i, discrimination a_i
(2PL) and member ability theta_j:

    P(correct_ij) = sigmoid(a_i * (theta_j - b_i))          (1PL: a_i = 1)

Joint MAP estimation with Gaussian priors (theta ~ N(0, 1), b ~ N(0, prior_b^2),
log a ~ N(0, prior_log_a^2)): the theta prior fixes the scale, and the priors keep items that
every member gets right (or wrong) finite. Standard errors come from the diagonal of the
Fisher information plus the prior precision, i.e. each parameter's error with the others held
at their estimates. The learner's ability is then estimated on the same scale with
`estimate_ability`.

Responses may be fractional, in [0, 1] (``likelihood_responses``): the same Bernoulli
log-likelihood then is a quasi-likelihood whose maximiser is consistent for the mean
response (the fractional logit of Papke & Wooldridge 1996, J. Applied Econometrics 11(6);
continuous [0, 1] responses for IRT on model ensembles as in beta^3-IRT, Chen et al. 2019,
AISTATS). That keeps difficulty informative where every member answers wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit


def log1pexp(z: np.ndarray) -> np.ndarray:
    """log(1 + e^z) without overflow."""
    return np.logaddexp(0.0, z)


@dataclass
class IrtFit:
    """Fitted IRT parameters with standard errors (arrays indexed by item or member)."""

    model: str  # "1pl" or "2pl"
    b: np.ndarray
    a: np.ndarray
    theta: np.ndarray
    se_b: np.ndarray
    se_a: np.ndarray
    se_theta: np.ndarray
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy."""
        out: dict[str, Any] = {"model": self.model, "converged": self.converged}
        for key in ("b", "a", "theta", "se_b", "se_a", "se_theta"):
            out[key] = [float(x) for x in getattr(self, key)]
        return out


def _unpack(x: np.ndarray, m: int, n: int, two_pl: bool) -> tuple[np.ndarray, ...]:
    theta, b = x[:m], x[m : m + n]
    log_a = x[m + n :] if two_pl else np.zeros(n)
    return theta, b, log_a


def _neg_log_posterior(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray, two_pl: bool, prior_b: float, prior_log_a: float
) -> tuple[float, np.ndarray]:
    m, n = y.shape
    theta, b, log_a = _unpack(x, m, n, two_pl)
    a = np.exp(log_a)
    z = a * (theta[:, None] - b[None, :])
    loglik = np.sum(mask * (y * z - log1pexp(z)))
    prior = 0.5 * (theta @ theta + (b @ b) / prior_b**2 + (log_a @ log_a) / prior_log_a**2)
    resid = mask * (y - expit(z))  # d loglik / dz
    g_theta = -(resid * a).sum(axis=1) + theta
    g_b = (resid * a).sum(axis=0) + b / prior_b**2
    grads = [g_theta, g_b]
    if two_pl:
        grads.append(-(resid * z).sum(axis=0) + log_a / prior_log_a**2)
    return float(prior - loglik), np.concatenate(grads)


def fit_irt(
    responses: np.ndarray, model: str = "2pl", prior_b: float = 2.0, prior_log_a: float = 0.5
) -> IrtFit:
    """Fit a 1PL or 2PL model to a members x items matrix of responses in [0, 1] (0/1 for
    correctness, fractional for partial credit; NaN = not answered)."""
    if model not in ("1pl", "2pl"):
        raise ValueError("model must be '1pl' or '2pl'")
    r = np.asarray(responses, dtype=float)
    if r.ndim != 2 or r.size == 0:
        raise ValueError("responses must be a non-empty members x items matrix")
    mask = ~np.isnan(r)
    if np.any((r[mask] < 0) | (r[mask] > 1)):
        raise ValueError("responses must be in [0, 1] (or NaN)")
    y = np.where(mask, r, 0.0)
    m, n = r.shape
    two_pl = model == "2pl"
    x0 = np.zeros(m + n + (n if two_pl else 0))
    # Start from centred logits of the observed proportions: converges in fewer steps.
    x0[:m] = _logit_rate(y.sum(1), mask.sum(1))
    x0[m : m + n] = -_logit_rate(y.sum(0), mask.sum(0))
    res = minimize(
        _neg_log_posterior,
        x0,
        args=(y, mask, two_pl, prior_b, prior_log_a),
        jac=True,
        method="L-BFGS-B",
    )
    theta, b, log_a = _unpack(res.x, m, n, two_pl)
    a = np.exp(log_a)
    se_theta, se_b, se_a = _standard_errors(theta, b, a, mask, prior_b, prior_log_a, two_pl)
    return IrtFit(model, b, a, theta, se_b, se_a, se_theta, bool(res.success))


def likelihood_responses(
    correct: np.ndarray, mean_logprob: np.ndarray, floor: float = 1e-3
) -> np.ndarray:
    """Members x items responses that stay informative when every member is wrong.

    ``correct`` (M, N) is 0/1 or NaN (not answered); ``mean_logprob`` (M, N) is the member's
    mean log-probability per target token (teacher-forced), NaN where unknown (an endpoint
    member). A correct answer scores 1; a wrong one scores its per-token probability of the
    target, exp(mean log-prob) in (0, 1), as partial credit: of two buckets that every member
    fails, the one whose targets the members find likelier is the easier. Cells without a
    log-probability keep their 0/1 correctness.
    """
    correct = np.asarray(correct, dtype=float)
    logprob = np.asarray(mean_logprob, dtype=float)
    if correct.shape != logprob.shape:
        raise ValueError("correct and mean_logprob must have the same shape")
    partial = np.clip(np.exp(np.minimum(logprob, 0.0)), floor, 1.0)  # (M, N)
    wrong_with_likelihood = (correct == 0) & ~np.isnan(logprob)
    return np.where(wrong_with_likelihood, partial, correct)


def _logit_rate(right: np.ndarray, total: np.ndarray) -> np.ndarray:
    p = (right + 0.5) / (total + 1.0)
    z = np.log(p / (1 - p))
    return z - z.mean()


def _standard_errors(
    theta: np.ndarray,
    b: np.ndarray,
    a: np.ndarray,
    mask: np.ndarray,
    prior_b: float,
    prior_log_a: float,
    two_pl: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = a * (theta[:, None] - b[None, :])
    w = mask * expit(z) * expit(-z)  # p(1-p): Fisher information of the logit
    se_theta = 1.0 / np.sqrt((w * a**2).sum(axis=1) + 1.0)
    se_b = 1.0 / np.sqrt((w * a**2).sum(axis=0) + 1.0 / prior_b**2)
    if not two_pl:
        return se_theta, se_b, np.zeros_like(a)
    se_log_a = 1.0 / np.sqrt((w * z**2).sum(axis=0) + 1.0 / prior_log_a**2)
    return se_theta, se_b, a * se_log_a  # delta method: se(a) = a * se(log a)


def estimate_ability(
    responses: np.ndarray, b: np.ndarray, a: np.ndarray | None = None, prior_sd: float = 1.0
) -> tuple[float, float]:
    """MAP ability (and its standard error) of one learner from 0/1 answers (NaN = skipped)
    to items with known difficulty b (and discrimination a), on the fitted scale."""
    r = np.asarray(responses, dtype=float)
    b = np.asarray(b, dtype=float)
    a = np.ones_like(b) if a is None else np.asarray(a, dtype=float)
    if not r.shape == b.shape == a.shape:
        raise ValueError("responses, b and a must have the same length")
    keep = ~np.isnan(r)
    r, b, a = r[keep], b[keep], a[keep]

    def neg_log_post(theta: float) -> float:
        z = a * (theta - b)
        return float(np.sum(log1pexp(z) - r * z) + 0.5 * (theta / prior_sd) ** 2)

    theta = float(minimize_scalar(neg_log_post, bounds=(-10.0, 10.0), method="bounded").x)
    z = a * (theta - b)
    info = float(np.sum(a**2 * expit(z) * expit(-z))) + 1.0 / prior_sd**2
    return theta, 1.0 / np.sqrt(info)
