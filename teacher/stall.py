"""Stalled arms: a bucket that shows no learning progress gets a bounded budget, then rests.

Learning-progress bandits have a blind spot on real streams: once the learnable arms are
mastered, an arm that cannot be learned (random targets) is the only one left, and its
tiny noisy progress wins every round. On the service that took 96% of the rounds for
3,000 steps and made the lineage forget what it had learned. Here an arm whose accuracy
did not rise over its last ``patience`` round-end evaluations, and whose held-out target
loss (when the learner reports it) shows no falling trend over them, becomes *stalled*.
"Rise" is a test too: the mean accuracy of the window's second half exceeds the first
half's by at least ``min_gain`` and by more than binomial noise (a one-sided two-
proportion z-test at 5% over ``probes`` answers per evaluation). With 32 probes a bucket
on a plateau near 0.5 swings by +-0.09 from one evaluation to the next; a rule on the
window's best minus its first value called such a plateau progress forever (seen: 23
rounds of counting-l1 at 0.4-0.67 on the stream benchmark). The loss is there for slow
learners: the exact-match accuracy of a bucket the model is slowly learning can sit near
zero for many rounds while its targets become steadily likelier. "Falling" is a trend
test, not a threshold on two numbers: the Theil-Sen slope of the log loss over the
window must have its confidence interval below zero and fall by at least
``min_loss_slope`` per evaluation (``teacher.progress.
loss_trend``). Random targets become likelier at first too (the model learns their
alphabet and length), but that fall levels off within a few rounds, and a level series
with noise has an interval that straddles zero; a slowly learnable bucket keeps falling.
Only round-end evaluations count in these windows: a re-evaluation at a candidate
measures another probe sample, at another time, and would make noise look like trend
(it still wakes an arm that it shows forgotten). The windows keep only the evaluations
the largest patience can use, so a service that runs for months holds a bounded state.
The stalled arm then:

- is no longer a focus; it is revisited with a chance ``explore / (1 + visits)`` per
  decision, which decays (the sum diverges, so a stalled arm is revisited forever, ever
  more rarely: a bucket that became learnable is found again);
- wakes up on evidence that it may be worth training again: new data (its train set
  grew by ``wake_growth``), a difficulty change of at least ``wake_difficulty`` logits,
  forgetting (a drop of ``forget_drop`` from its best accuracy, and beyond the noise of
  two evaluations), or a visit that shows a gain.

Slow starters get a fair budget: ``patience`` grows with predicted difficulty,
``min_rounds + ceil(slow_start_rounds * (1 - p))`` evaluations with p = sigmoid(theta - b)
(0.5 when unknown), so a bucket predicted hard gets more rounds before it can stall,
instead of the two cold-start rounds. (Competence-based curricula make the same point:
the budget a task gets before it is judged should scale with how hard it is expected to
be; Platanios et al. 2019, arXiv 1903.09848.)

Pure: explicit JSON state, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from teacher.progress import LossTrend, loss_trend


@dataclass
class StallConfig:
    """When an arm stalls, how often a stalled arm is revisited, and what wakes it."""

    min_rounds: int = 4  # evaluations any arm gets before it can stall
    slow_start_rounds: int = 6  # extra evaluations for an arm predicted hard
    min_gain: float = 0.05  # accuracy gain (second half of the window over the first)
    probes: int = 32  # answers per evaluation: the binomial noise of an accuracy
    # A falling held-out loss counts as progress when its trend's interval is below zero
    # and it falls by at least this much per evaluation (relative: log loss).
    min_loss_slope: float = 0.01
    loss_floor: float = 0.1  # added to the loss before the log (see loss_trend)
    confidence: float = 0.9  # of the trend's interval
    explore: float = 0.2  # revisit chance of a stalled arm per decision, / (1 + visits)
    forget_drop: float = 0.1  # a drop from the best accuracy this large wakes an arm
    wake_growth: float = 0.1  # relative growth of an arm's train examples that wakes it
    wake_difficulty: float = 0.5  # change of its difficulty b (logits) that wakes it

    def __post_init__(self) -> None:
        if self.min_rounds < 2 or self.slow_start_rounds < 0:
            raise ValueError("need min_rounds >= 2 and slow_start_rounds >= 0")
        if not 0.0 < self.min_gain <= 1.0 or not 0.0 <= self.explore <= 1.0:
            raise ValueError("need 0 < min_gain <= 1 and 0 <= explore <= 1")
        if self.probes < 1:
            raise ValueError("probes must be >= 1")
        if self.min_loss_slope <= 0 or self.loss_floor < 0:
            raise ValueError("need min_loss_slope > 0 and loss_floor >= 0")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError("need 0.5 < confidence < 1")

    @property
    def longest_window(self) -> int:
        """The most evaluations any patience budget looks at: what a window keeps."""
        return self.min_rounds + self.slow_start_rounds
        if self.forget_drop <= 0 or self.wake_growth <= 0 or self.wake_difficulty <= 0:
            raise ValueError("forget_drop, wake_growth and wake_difficulty must be > 0")


def accuracy_gain(accuracies: list[float]) -> float:
    """Mean accuracy of the second half of the window minus the first half's."""
    if len(accuracies) < 2:
        return 0.0
    half = len(accuracies) // 2
    return float(np.mean(accuracies[half:]) - np.mean(accuracies[:half]))


def accuracy_rose(accuracies: list[float], min_gain: float, probes: int, z: float = 1.645) -> bool:
    """A rise of at least ``min_gain`` that binomial noise does not explain: a one-sided
    two-proportion z-test of the window's halves at 5% (``z``), each half pooling
    ``probes`` answers per evaluation."""
    gain = accuracy_gain(accuracies)
    if gain < min_gain:
        return False
    half = len(accuracies) // 2
    n1, n2 = half * probes, (len(accuracies) - half) * probes
    pooled = float(np.mean(accuracies))
    se = math.sqrt(max(pooled * (1.0 - pooled), 1e-12) * (1.0 / n1 + 1.0 / n2))
    return gain / se >= z


def predicted_accuracy(theta: float | None, b: float | None) -> float:
    """p = sigmoid(theta - b) (Rasch model); 0.5 when either is unknown."""
    if theta is None or b is None:
        return 0.5
    return 1.0 / (1.0 + math.exp(-(theta - b)))


class StallTracker:
    """Per-arm round-end evaluations since the arm's last (re)start, stalled arms and their
    wake-ups. Every per-arm list is trimmed to the longest window."""

    def __init__(self, config: StallConfig | None = None) -> None:
        self.config = config or StallConfig()
        self.since: dict[str, list[float]] = {}  # recent accuracies since the last wake-up
        self.losses: dict[str, list[float]] = {}  # recent held-out losses, likewise
        self.counts: dict[str, int] = {}  # round-end evaluations since the last wake-up
        self.best: dict[str, float] = {}
        self.stalled: dict[str, str] = {}  # arm -> why it stalled
        self.baseline: dict[str, float] = {}  # accuracy when it stalled: revisits beat it
        self.visits: dict[str, int] = {}  # revisits while stalled
        self.sizes: dict[str, int] = {}  # train examples at the last wake-up
        self.difficulty: dict[str, float] = {}  # b at the last wake-up
        self.woken: dict[str, str] = {}  # arm -> why it last woke up

    def patience(self, p: float) -> int:
        """Evaluations before an arm with predicted accuracy ``p`` can stall."""
        cfg = self.config
        return cfg.min_rounds + math.ceil(cfg.slow_start_rounds * (1.0 - p))

    def evaluated(self, arm: str) -> int:
        """Round-end evaluations since the arm's last (re)start."""
        return self.counts.get(arm, 0)

    def is_stalled(self, arm: str) -> bool:
        return arm in self.stalled

    def trend(self, arm: str, last: int | None = None) -> LossTrend | None:
        """The trend of the arm's recent held-out losses (the last ``last`` of them)."""
        losses = self.losses.get(arm, [])
        cfg = self.config
        return loss_trend(losses[-last:] if last else losses, cfg.loss_floor, cfg.confidence)

    def observe(
        self,
        arm: str,
        accuracy: float,
        p: float,
        mastery: float,
        loss: float | None = None,
        round_end: bool = True,
    ) -> str | None:
        """Record an evaluation (accuracy, and the held-out loss when known); returns why
        the arm stalled when it just did. A re-evaluation (``round_end`` False) can show
        forgetting but does not enter the windows."""
        cfg = self.config
        best = self.best.get(arm)
        if best is not None and accuracy <= best - self.forget_margin(best):
            self.wake(arm, f"forgetting: accuracy {accuracy:.2f}, best was {best:.2f}")
        self.best[arm] = accuracy if best is None else max(best, accuracy)
        if not round_end:
            return None
        if arm in self.stalled:
            if accuracy >= self.baseline[arm] + cfg.min_gain:  # a revisit found progress
                self.wake(arm, f"progress on a revisit: {self.baseline[arm]:.2f} -> {accuracy:.2f}")
            return None
        self._append(self.since, arm, accuracy)
        if loss is not None:
            self._append(self.losses, arm, loss)
        self.counts[arm] = self.counts.get(arm, 0) + 1
        patience = self.patience(p)
        window = self.since[arm][-patience:]
        if self.counts[arm] < patience or accuracy >= mastery:
            return None
        gain = accuracy_gain(window)
        trend = self.trend(arm, patience)
        if self._progressed(window, trend):
            return None
        why = (
            f"gained {gain:+.2f} accuracy (second half over first; a rise needs "
            f">= {cfg.min_gain:.2f} beyond noise) in {len(window)} evaluations, "
            f"accuracy {accuracy:.2f}"
        )
        if trend is not None:
            why += (
                f", held-out loss trend {trend.slope:+.1%} per evaluation "
                f"({cfg.confidence:.0%} interval {trend.low:+.1%}..{trend.high:+.1%})"
            )
        self._stall(arm, why, accuracy)
        return why

    def forget_margin(self, best: float) -> float:
        """How far below its best an accuracy must fall to count as forgetting: at least
        ``forget_drop``, and more than the noise of two evaluations of ``probes`` answers
        (2.5 standard errors of their difference). Without the noise term a plateau at 0.5
        "forgot" every few rounds (32 probes swing by +-0.09) and never stalled."""
        cfg = self.config
        noise = 2.5 * math.sqrt(2.0 * best * (1.0 - best) / cfg.probes)
        return max(cfg.forget_drop, noise)

    def _append(self, lists: dict[str, list[float]], arm: str, value: float) -> None:
        values = lists.setdefault(arm, [])
        values.append(float(value))
        del values[: -self.config.longest_window]

    def _stall(self, arm: str, why: str, accuracy: float) -> None:
        self._clear_window(arm)
        self.stalled[arm] = why
        self.baseline[arm] = float(accuracy)
        self.visits[arm] = 0

    def _clear_window(self, arm: str) -> None:
        """Forget the arm's evaluations since its last (re)start."""
        for per_arm in (self.since, self.losses, self.counts):
            per_arm.pop(arm, None)

    def _progressed(self, accuracies: list[float], trend: LossTrend | None) -> bool:
        """Whether a window's accuracies rose, or its held-out loss trend fell."""
        cfg = self.config
        if accuracy_rose(accuracies, cfg.min_gain, cfg.probes):
            return True
        return trend is not None and trend.falling and trend.progress >= cfg.min_loss_slope

    def restart_progressing(self, why: str) -> list[str]:
        """The model's weights were replaced (a reset to the active version, a rollback).

        An arm that was making progress on the abandoned weights is learnable, but its next
        evaluations (on the replaced weights) fall back: in one window with the earlier
        ones they look like no progress, and a learnable bucket stalled so in the service.
        Such arms restart their window (and their best accuracy). Arms without progress
        keep theirs: restarting every window at every reset kept a noise bucket from ever
        stalling when resets came every few rounds. Returns the restarted arms."""
        restarted = []
        for arm, history in list(self.since.items()):
            if arm in self.stalled or len(history) < 2:
                continue
            if self._progressed(history, self.trend(arm)):
                self.wake(arm, why)
                self.best.pop(arm, None)
                restarted.append(arm)
        return restarted

    def wake(self, arm: str, why: str) -> None:
        """The arm may be worth training again: it gets a fresh patience budget."""
        self.woken[arm] = why
        self._clear_window(arm)
        self.baseline.pop(arm, None)
        if self.stalled.pop(arm, None) is not None:
            self.visits.pop(arm, None)

    def note_size(self, arm: str, size: int) -> bool:
        """The arm's train set size; True when it grew by ``wake_growth`` since last noted
        growth (new data), which also wakes a stalled arm."""
        seen = self.sizes.setdefault(arm, size)
        if size >= seen * (1.0 + self.config.wake_growth) and size > seen:
            self.sizes[arm] = size
            if arm in self.stalled:
                self.wake(arm, f"new data: {seen} -> {size} train examples")
            return True
        return False

    def note_difficulty(self, arm: str, b: float) -> bool:
        """The arm's difficulty b; True when its change woke it up."""
        seen = self.difficulty.setdefault(arm, b)
        if abs(b - seen) >= self.config.wake_difficulty:
            self.difficulty[arm] = b
            if arm in self.stalled:
                self.wake(arm, f"difficulty changed: b {seen:+.2f} -> {b:+.2f}")
                return True
        return False

    def revisit(self, arms: list[str], rng: np.random.Generator) -> str | None:
        """A stalled arm to revisit now, or None; each with chance explore / (1 + visits)."""
        stalled = [a for a in arms if a in self.stalled]
        for arm in [stalled[i] for i in rng.permutation(len(stalled))]:
            if rng.random() < self.config.explore / (1.0 + self.visits[arm]):
                self.visits[arm] += 1
                return arm
        return None

    def state_dict(self) -> dict[str, Any]:
        return {
            "since": {a: list(h) for a, h in self.since.items()},
            "losses": {a: list(h) for a, h in self.losses.items()},
            "counts": dict(self.counts),
            "baseline": dict(self.baseline),
            "best": dict(self.best),
            "stalled": dict(self.stalled),
            "visits": dict(self.visits),
            "sizes": dict(self.sizes),
            "difficulty": dict(self.difficulty),
            "woken": dict(self.woken),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.since = {a: [float(x) for x in h] for a, h in state["since"].items()}
        self.losses = {a: [float(x) for x in h] for a, h in state.get("losses", {}).items()}
        # States saved before the counts and baselines: the windows were whole then.
        counts = state.get("counts") or {a: len(h) for a, h in self.since.items()}
        self.counts = {a: int(n) for a, n in counts.items()}
        baseline = state.get("baseline") or {a: self.since[a][0] for a in state["stalled"]
                                             if self.since.get(a)}  # fmt: skip
        self.baseline = {a: float(x) for a, x in baseline.items()}
        for arm in self.stalled:
            self.baseline.setdefault(arm, 0.0)
            self._clear_window(arm)
        self.best = {a: float(x) for a, x in state["best"].items()}
        self.stalled = dict(state["stalled"])
        self.visits = {a: int(n) for a, n in state["visits"].items()}
        self.sizes = {a: int(n) for a, n in state["sizes"].items()}
        self.difficulty = {a: float(b) for a, b in state["difficulty"].items()}
        self.woken = dict(state["woken"])
