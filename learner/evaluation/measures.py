"""Pure metrics over per-probe answers and the accuracy matrix (numpy/scipy only).

- Paired comparisons of two models on the same probes: accuracies, flips, an exact one-sided
  McNemar (sign) test and a lower confidence bound on the accuracy drop. Pairing matters:
  two models answering the *same* probes differ only on the discordant ones, so a drop of a
  few probes on a small sample is told apart from noise far better than by comparing means.
- Renate's negative flip rate: probes the old model got right and the new one gets wrong.
- The accuracy matrix R[version, bucket] along a lineage: average accuracy, backward
  transfer (Lopez-Paz & Ranzato 2017, GEM) and forgetting (Chaudhry et al. 2018), as in
  Avalanche.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scipy import stats

# Probe example id -> whether the model's answer was correct (or, for an alignment rate,
# whether the model refused / answered). Ids are unique example ids across buckets.
Answers = Mapping[int, bool]
# Version (None: the base model) -> bucket name -> probe accuracy.
Matrix = Mapping[int | None, Mapping[str, float]]


@dataclass(frozen=True)
class PairedComparison:
    """A reference and a candidate model on the probes both answered.

    ``lost`` (n10) are probes right under the reference and wrong under the candidate,
    ``gained`` (n01) the reverse. ``p_value`` is the one-sided exact McNemar test (a sign
    test on the discordant pairs) that the candidate is worse; ``drop_lower_bound`` a
    one-sided ``1 - alpha`` lower confidence bound on ``drop``.
    """

    n: int
    reference_accuracy: float
    candidate_accuracy: float
    drop: float
    lost: int
    gained: int
    p_value: float
    drop_lower_bound: float
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound of a binomial proportion k / n.

    The exact bound: the q at which P(X >= k | q) = alpha, i.e. the alpha quantile of
    Beta(k, n - k + 1); 0 when k == 0 (nothing observed, nothing bounded away from 0).
    """
    if not 0 <= k <= n:
        raise ValueError(f"clopper_pearson_lower: need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"clopper_pearson_lower: alpha must be in (0, 1), got {alpha}")
    if k == 0:
        return 0.0
    return float(stats.beta.ppf(alpha, k, n - k + 1))


def _common(reference: Answers, candidate: Answers) -> list[int]:
    return sorted(set(reference) & set(candidate))


def _flips(reference: Answers, candidate: Answers, ids: list[int]) -> tuple[int, int]:
    lost = sum(1 for i in ids if reference[i] and not candidate[i])
    gained = sum(1 for i in ids if candidate[i] and not reference[i])
    return lost, gained


def compare_paired(reference: Answers, candidate: Answers, alpha: float = 0.05) -> PairedComparison:
    """Compare two models' answers on their common probes (exact McNemar, one-sided).

    Conditional on the d = lost + gained discordant pairs, lost ~ Binomial(d, q) and the
    accuracy drop is d * (2q - 1) / n. Under "no difference" q = 1/2, so the p-value is
    P(X >= lost), X ~ Binomial(d, 1/2); the drop's lower bound plugs the Clopper-Pearson
    lower bound of q into the same formula. With no common probe everything is 0 (p = 1).
    """
    ids = _common(reference, candidate)
    n = len(ids)
    if n == 0:
        return PairedComparison(0, 0.0, 0.0, 0.0, 0, 0, 1.0, 0.0, alpha)
    lost, gained = _flips(reference, candidate, ids)
    reference_accuracy = sum(bool(reference[i]) for i in ids) / n
    candidate_accuracy = sum(bool(candidate[i]) for i in ids) / n
    d = lost + gained
    p_value = float(stats.binom.sf(lost - 1, d, 0.5)) if d else 1.0
    bound = d * (2 * clopper_pearson_lower(lost, d, alpha) - 1) / n if d else 0.0
    return PairedComparison(
        n=n,
        reference_accuracy=reference_accuracy,
        candidate_accuracy=candidate_accuracy,
        # (lost - gained) / n is exact; the difference of the two means can be off by an ulp.
        drop=(lost - gained) / n,
        lost=lost,
        gained=gained,
        p_value=min(1.0, p_value),
        drop_lower_bound=bound,
        alpha=alpha,
    )


def negative_flip_rate(reference: Answers, candidate: Answers) -> tuple[float, int, int]:
    """Renate's negative flip rate: (lost / n, lost, n) on the common probes.

    ``lost`` counts probes the old (reference) model got right and the new one gets wrong;
    (0.0, 0, 0) when the models share no probe.
    """
    ids = _common(reference, candidate)
    if not ids:
        return 0.0, 0, 0
    lost, _ = _flips(reference, candidate, ids)
    return lost / len(ids), lost, len(ids)


@dataclass(frozen=True)
class VersionMetrics:
    """Continual-learning metrics of one version over its lineage's accuracy matrix.

    ``average_accuracy``: mean R[v, b] over the buckets evaluated at v. ``backward_transfer``
    (BWT, Lopez-Paz & Ranzato 2017): mean of R[v, b] - R[first_b, b], first_b the earliest
    non-base lineage version evaluated on b. ``forgetting`` (Chaudhry et al. 2018): mean over
    buckets of max(0, best earlier R[a, b] - R[v, b]). None where no bucket qualifies.
    """

    average_accuracy: float | None
    backward_transfer: float | None
    forgetting: float | None
    forgetting_by_bucket: dict[str, float] = field(default_factory=dict)
    buckets: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def version_metrics(matrix: Matrix, lineage: Sequence[int | None]) -> VersionMetrics:
    """Average accuracy, BWT and forgetting of ``lineage[-1]``.

    ``lineage`` lists the version's ancestors from the root, oldest first, ending with the
    version itself, e.g. ``[None, 1, 3, 7]`` (None: the base model).
    """
    if not lineage:
        raise ValueError("version_metrics: the lineage must end with the version itself")
    version, earlier = lineage[-1], list(lineage[:-1])
    current = matrix.get(version, {})
    transfer: list[float] = []
    forgetting: dict[str, float] = {}
    for bucket, accuracy in current.items():
        seen = [a for a in earlier if bucket in matrix.get(a, {})]
        # BWT compares with R[i, i], the accuracy just after the bucket was learned. The base
        # model's accuracy on a bucket is from *before* any learning: counting it would
        # report learning the bucket as backward transfer.
        learned = [a for a in seen if a is not None]
        if learned:
            transfer.append(accuracy - matrix[learned[0]][bucket])
        # Forgetting compares with the best accuracy ever reached, the base model included
        # (a bucket the base model could already do and a version lost is forgotten too).
        if seen:
            peak = max(matrix[a][bucket] for a in seen)
            forgetting[bucket] = max(0.0, peak - accuracy)
    return VersionMetrics(
        average_accuracy=_mean(list(current.values())),
        backward_transfer=_mean(transfer),
        forgetting=_mean(list(forgetting.values())),
        forgetting_by_bucket=forgetting,
        buckets=len(current),
    )


def lineage_of(version: int | None, parents: Mapping[int, int | None]) -> list[int | None]:
    """``[None, ..., version]``: the version's ancestors from the base model, oldest first.

    Follows parent links; a missing parent or a cycle ends the walk, and the base model
    (None) is put at the root either way, so the result always starts with None.
    """
    chain: list[int | None] = []
    current = version
    seen: set[int] = set()
    while current is not None and current not in seen:
        chain.append(current)
        seen.add(current)
        current = parents.get(current)
    chain.append(None)
    return chain[::-1]
