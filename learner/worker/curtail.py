"""Stop judging a candidate once its verdict is known: deterministic curtailment.

A candidate answers its probes in ``looks`` blocks (the first quarter of every probe set,
then the second, ...). After each block the gate is run twice on the whole sample, with
every probe not answered yet counted once as answered well and once as answered badly.
Every check of the gate is monotone in each answer (a right answer, a refusal of a
harmful request or an answer to a benign one never moves a check towards failing: fewer
flips lost, more gained, a higher rate), so the verdict the full sample would give lies
between those two. When both give the same verdict (and both have, or both lack, a failed
check, which the scale search reads too), no answer still to come can change it, and
judging stops. The decision is the one the full sample gives, so the gate keeps its error
rates exactly: deterministic curtailment (Jennison and Turnbull 2000, "Group Sequential
Methods with Applications to Clinical Trials", section 10.2). It stops early where a
verdict is clear: a candidate that fails a check by a wide margin, or a scale of the
scale search that cannot pass.

The report of a curtailed judgement is the bound that shows why: for a rejection, the
optimistic one (it fails even if every remaining probe were answered well); otherwise the
pessimistic one (it holds, or passes, even if every remaining probe were answered badly).
Its summary says how many probes were answered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from learner.evaluation.gate import BucketEvidence, GateReport, RateEvidence
from learner.evaluation.probes import ProbeAnswer
from learner.store.probes import ProbeSet
from learner.worker.evidence import (
    HARMFUL_RATE,
    Answerer,
    CachedAnswers,
    Evidence,
    is_harmful_request,
)

RunGate = Callable[[list[BucketEvidence], list[RateEvidence]], GateReport]
Gather = Callable[[list[ProbeSet], Answerer], Evidence]


def block_ids(sets: list[ProbeSet], look: int, looks: int) -> set[int]:
    """The probe ids answered by the end of ``look`` (1-based) of ``looks``: the first
    ``ceil(n * look / looks)`` probes of every set."""
    return {i for p in sets for i in p.ids[: math.ceil(len(p.ids) * look / looks)]}


def answered_only(answer: Answerer, allowed: set[int]) -> Answerer:
    """``answer`` restricted to the probes in ``allowed`` (the others are left out)."""

    def run(probes: ProbeSet) -> list[ProbeAnswer]:
        part = probes.only(set(probes.ids) & allowed)
        return answer(part) if part.ids else []

    return run


def bound(
    evidence: Evidence,
    sets: list[ProbeSet],
    answered: set[int],
    good: bool,
    is_refusal: Callable[[str], bool],
) -> tuple[list[BucketEvidence], list[RateEvidence]]:
    """The gate's evidence with every unanswered probe of ``sets`` counted as answered
    well (``good``) or badly. ``evidence`` was gathered on the same ``sets``, in order."""
    buckets = []
    harmful: dict[int, bool] = {}
    benign: dict[int, bool] = {}
    for probes, bucket in zip(sets, evidence.buckets, strict=True):
        pending = [i for i in probes.ids if i not in answered]
        buckets.append(
            replace(bucket, candidate={**bucket.candidate, **dict.fromkeys(pending, good)})
        )
        if probes.kind == "alignment":
            targets = dict(zip(probes.ids, (t for _, t in probes.examples), strict=True))
            for i in pending:
                pool = harmful if is_harmful_request(probes, targets[i], is_refusal) else benign
                pool[i] = good
    rates = []
    for rate in evidence.alignment:
        pool = harmful if rate.name == HARMFUL_RATE else benign
        rates.append(replace(rate, candidate={**rate.candidate, **pool}))
    return buckets, rates


def decision(report: GateReport) -> tuple[str, bool]:
    """What the scale search reads of a report: the verdict, and whether any check failed."""
    return report.verdict, bool(report.failures)


def curtailed(
    sets: list[ProbeSet],
    answer: CachedAnswers,
    gather: Gather,
    run_gate: RunGate,
    is_refusal: Callable[[str], bool],
    looks: int,
) -> tuple[Evidence, GateReport]:
    """The gate's verdict on ``sets``, answering no more blocks of probes than it needs
    (``answer`` caches: a probe answered at one look is not answered again)."""
    total = sum(len(p.ids) for p in sets)
    for look in range(1, looks + 1):
        answered = block_ids(sets, look, looks)
        evidence = gather(sets, answered_only(answer, answered))
        if look == looks:
            return evidence, run_gate(evidence.buckets, evidence.alignment)
        low = run_gate(*bound(evidence, sets, answered, False, is_refusal))
        high = run_gate(*bound(evidence, sets, answered, True, is_refusal))
        if decision(low) == decision(high):
            shown = high if low.verdict == "reject" else low
            n = len(answered)
            note = f"decided after {n} of {total} probes (no remaining answer could change it)"
            return evidence, replace(shown, summary=f"{shown.summary}; {note}")
    raise AssertionError("unreachable: the last look returns")
