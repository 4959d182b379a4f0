"""Learning-progress signals, one tracker per arm (task bucket), keyed by arm name.

All three are pure and keep explicit, JSON-serialisable state:

- `ProbeProgress`: absolute learning progress |score_t - score_{t-k}| of probe accuracy between
  evaluations (ALP, Portelas et al. 2019). Absolute, so forgetting also attracts attention.
- `EmaProgress`: fast EMA minus slow EMA of the training loss (TSCL "online", Matiisen et al.
  2017, arXiv 1707.00183).
- `WindowSlope`: slope of a linear fit over the last K (step, value) pairs (TSCL "window");
  an arm with fewer than 2 points gets slope 1 to force exploration.

And `loss_trend`, the trend of an arm's held-out target loss over its recent evaluations
with a confidence interval: the teacher's continuous progress signal and its stall test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import theilslopes


def per_arm_floats(values: dict[str, Any]) -> dict[str, list[float]]:
    """A copy of per-arm value lists as plain floats: what a state dict holds (JSON-safe)
    and what loading one restores."""
    return {arm: [float(x) for x in v] for arm, v in values.items()}


class PerArmLists:
    """The state of a tracker that keeps a list of floats per arm (in the attribute named
    by ``_lists``) and a few numeric settings (``_settings``, restored as their type)."""

    _settings: tuple[str, ...] = ()
    _lists = ""

    def state_dict(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in self._settings}
        return {**state, self._lists: per_arm_floats(getattr(self, self._lists))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._settings:
            setattr(self, name, type(getattr(self, name))(state[name]))
        setattr(self, self._lists, per_arm_floats(state[self._lists]))


class ProbeProgress(PerArmLists):
    """Absolute learning progress of probe accuracy between evaluations (ALP)."""

    _settings, _lists = ("k", "keep"), "history"

    def __init__(self, k: int = 1, keep: int = 32) -> None:
        if k < 1 or keep <= k:
            raise ValueError("need k >= 1 and keep > k")
        self.k, self.keep = k, keep
        self.history: dict[str, list[float]] = {}

    def observe(self, arm: str, score: float) -> float | None:
        """Record a probe score; return the new ALP, or None while there is too little history."""
        h = self.history.setdefault(arm, [])
        h.append(float(score))
        del h[: -self.keep]
        return self.progress(arm)

    def progress(self, arm: str) -> float | None:
        h = self.history.get(arm, [])
        if len(h) <= self.k:
            return None
        return abs(h[-1] - h[-1 - self.k])

    def last(self, arm: str) -> float | None:
        h = self.history.get(arm)
        return h[-1] if h else None


class EmaProgress(PerArmLists):
    """Fast-minus-slow EMA of the training loss (TSCL online). Negative while loss falls."""

    _settings, _lists = ("fast", "slow"), "emas"

    def __init__(self, fast: float = 0.5, slow: float = 0.1) -> None:
        if not 0.0 < slow < fast <= 1.0:
            raise ValueError("need 0 < slow < fast <= 1")
        self.fast, self.slow = fast, slow
        self.emas: dict[str, list[float]] = {}  # arm -> [fast_ema, slow_ema]

    def observe(self, arm: str, loss: float) -> float:
        """Fold in one loss value; return the signed progress fast - slow."""
        loss = float(loss)
        e = self.emas.get(arm)
        if e is None:
            e = self.emas[arm] = [loss, loss]  # start both at the first value: no fake progress
        else:
            e[0] += self.fast * (loss - e[0])
            e[1] += self.slow * (loss - e[1])
        return e[0] - e[1]

    def progress(self, arm: str) -> float | None:
        e = self.emas.get(arm)
        return None if e is None else e[0] - e[1]


class WindowSlope:
    """Slope of a least-squares line over each arm's last `window` (step, value) pairs."""

    def __init__(self, window: int = 8) -> None:
        if window < 2:
            raise ValueError("window must be >= 2")
        self.window = window
        self.points: dict[str, list[list[float]]] = {}  # arm -> [[step, value], ...]

    def observe(self, arm: str, step: float, value: float) -> float:
        p = self.points.setdefault(arm, [])
        p.append([float(step), float(value)])
        del p[: -self.window]
        return self.slope(arm)

    def next_step(self, arm: str) -> float:
        """One past the arm's last step: for counting evaluations rather than wall time."""
        p = self.points.get(arm)
        return p[-1][0] + 1.0 if p else 0.0

    def count(self, arm: str) -> int:
        return len(self.points.get(arm, []))

    def slope(self, arm: str) -> float:
        """TSCL window slope; 1.0 with fewer than 2 points (forces exploration)."""
        p = self.points.get(arm, [])
        if len(p) < 2:
            return 1.0
        x, y = np.asarray(p).T
        dx = x - x.mean()
        denom = float(dx @ dx)
        return 0.0 if denom == 0.0 else float(dx @ (y - y.mean()) / denom)

    def slope_se(self, arm: str, sd: float) -> float:
        """Standard error of the slope when each value has noise ``sd``: sd / sqrt(Sxx)
        (inf with fewer than 2 points)."""
        p = self.points.get(arm, [])
        if len(p) < 2:
            return math.inf
        x = np.asarray(p)[:, 0]
        dx = x - x.mean()
        return sd / math.sqrt(float(dx @ dx))

    def state_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "points": {a: [list(q) for q in p] for a, p in self.points.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window = int(state["window"])
        self.points = {a: [[float(s), float(v)] for s, v in p] for a, p in state["points"].items()}


@dataclass(frozen=True)
class LossTrend:
    """Change of log(held-out loss + floor) per evaluation, with a confidence interval."""

    slope: float
    low: float
    high: float
    points: int

    @property
    def falling(self) -> bool:
        """The interval excludes zero from above: the loss is falling, not just noisy."""
        return self.high < 0.0

    @property
    def progress(self) -> float:
        """Relative fall per evaluation (0 when flat or rising): the learning progress."""
        return max(0.0, -self.slope)


def loss_trend(
    losses: Sequence[float], floor: float = 0.1, confidence: float = 0.9
) -> LossTrend | None:
    """Theil-Sen slope of log(loss + floor) over evaluation index, with Sen's interval.

    Why this estimator: the held-out target loss (mean token NLL of the probes' targets,
    measured at every round end) moves long before exact-match accuracy does, so a slow
    learner shows progress while its accuracy still sits at zero; progress signals built
    on loss are what Graves et al. 2017 (arXiv 1704.03003) use for automated curricula.
    The slope is the median of all pairwise slopes (Theil 1950; Sen 1968), which one
    outlying evaluation (a reset, a lucky sample) cannot drag, and its interval comes
    from Kendall's tau distribution (Sen 1968), so "falling" means a trend that is
    unlikely under no trend: about 5% one-sided at ``confidence`` 0.9. With 4 points a
    strictly falling series is significant (all 6 pairs concordant, p = 1/24).
    The log makes the slope a relative change, comparable across buckets whose losses
    differ in scale; ``floor`` keeps the losses of mastered buckets (near zero) from
    turning a tiny absolute change into a large relative one. Fewer than 3 points: None.
    """
    if len(losses) < 3:
        return None
    y = np.log(np.maximum(np.asarray(losses, dtype=float), 0.0) + floor)  # (n,)
    x = np.arange(len(y), dtype=float)  # (n,) evaluation index
    fit = theilslopes(y, x, alpha=confidence)
    return LossTrend(float(fit.slope), float(fit.low_slope), float(fit.high_slope), len(y))
