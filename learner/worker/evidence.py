"""The gate's evidence for one candidate: answers of the candidate and its references.

For every learned bucket (any bucket the active version was evaluated on, every bucket
trained since, every alignment bucket) the candidate answers the bucket's probe sample.
The references are the active version (its stored answers, the missing ones evaluated
now), the best earlier version of the active lineage (stored answers only), and for the
alignment suite the base model. Newly computed answers are returned for storing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from learner.evaluation.gate import BucketEvidence, RateEvidence
from learner.evaluation.general_suite import BUCKETS as GENERAL_SUITE
from learner.evaluation.measures import lineage_of
from learner.evaluation.probes import ProbeAnswer
from learner.evaluation.refusal import RefusalDetector
from learner.store.evaluations import StoredAnswer
from learner.store.probes import ProbeSet

# The two alignment rates of the gate.
HARMFUL_RATE = "refusal rate on harmful prompts"
BENIGN_RATE = "answer rate on benign prompts"
# A general-suite bucket -> the label of its requests (harmful | benign).
LABEL_OF_BUCKET = {bucket: label for label, bucket in GENERAL_SUITE.items()}

# Answers a model gives to a probe set (the candidate, the active version or the base).
Answerer = Callable[[ProbeSet], list[ProbeAnswer]]
Model = int | None  # an adapter version; None is the base model


class CachedAnswers:
    """A candidate's answers at one scale, each probe answered once however often asked."""

    def __init__(self, answer: Answerer) -> None:
        self.answer = answer
        self.known: dict[int, ProbeAnswer] = {}

    def __call__(self, probes: ProbeSet) -> list[ProbeAnswer]:
        missing = {i for i in probes.ids if i not in self.known}
        if missing:
            self.known.update({a.example_id: a for a in self.answer(probes.only(missing))})
        return [self.known[i] for i in probes.ids]


def version_name(version: Model) -> str:
    return "base" if version is None else f"v{version}"


@dataclass
class Evidence:
    """Everything the gate needs, plus the answers to store afterwards."""

    buckets: list[BucketEvidence] = field(default_factory=list)
    alignment: list[RateEvidence] = field(default_factory=list)
    candidate: dict[int, list[ProbeAnswer]] = field(default_factory=dict)  # by bucket id
    new_reference: dict[Model, dict[int, list[ProbeAnswer]]] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)  # candidate, by bucket name


@dataclass
class References:
    """Stored answers (by version, then example id) and how to compute missing ones."""

    stored: dict[Model, dict[int, StoredAnswer]]
    answerers: dict[Model, Answerer]  # the active version and the base

    def answers(self, version: Model, probes: ProbeSet, fresh: Evidence) -> dict[int, StoredAnswer]:
        """``version``'s answers to every probe of the set; missing ones are computed now
        (when an answerer for ``version`` exists) and recorded in ``fresh``."""
        have = {i: a for i, a in self.stored.get(version, {}).items() if i in set(probes.ids)}
        missing = [i for i in probes.ids if i not in have]
        if missing and version in self.answerers:
            computed = self.answerers[version](probes.only(set(missing)))
            fresh.new_reference.setdefault(version, {})[probes.bucket_id] = computed
            have.update({a.example_id: StoredAnswer(a.correct, a.answer) for a in computed})
            self.stored.setdefault(version, {}).update(
                {a.example_id: StoredAnswer(a.correct, a.answer) for a in computed}
            )
        return have


def is_harmful_request(probes: ProbeSet, target: str, is_refusal: Callable[[str], bool]) -> bool:
    """Whether an alignment probe is a harmful request: the general suite's buckets say
    what each request is; elsewhere a refusal as the target marks a harmful request."""
    label = LABEL_OF_BUCKET.get(probes.bucket)
    return label == "harmful" if label is not None else is_refusal(target)


def best_earlier(
    stored: dict[Model, dict[int, StoredAnswer]],
    candidates: list[Model],
    probes: ProbeSet,
    exclude: Model,
) -> tuple[Model, dict[int, bool]] | None:
    """The earlier version with the highest stored accuracy on at least half the sample."""
    best: tuple[float, Model, dict[int, bool]] | None = None
    for version in candidates:
        if version == exclude:
            continue
        answers = {i: a.correct for i, a in stored.get(version, {}).items() if i in probes.ids}
        if len(answers) * 2 < len(probes.ids) or not answers:
            continue
        accuracy = sum(answers.values()) / len(answers)
        if best is None or accuracy > best[0]:
            best = (accuracy, version, answers)
    return None if best is None else (best[1], best[2])


def gather(
    sets: list[ProbeSet],
    candidate: Answerer,
    refs: References,
    active: Model,
    parents: dict[int, int | None],
    trained: set[int],
    is_refusal: RefusalDetector,
) -> Evidence:
    """Answer every probe set with the candidate and build the gate's evidence."""
    ev = Evidence()
    lineage = lineage_of(active, parents)[:-1]  # the active version's ancestors (base first)
    # "candidate" / "base" / "active" -> example id -> refused (harmful) or answered (benign)
    harmful: dict[str, dict[int, bool]] = {"candidate": {}, "base": {}, "active": {}}
    benign: dict[str, dict[int, bool]] = {"candidate": {}, "base": {}, "active": {}}
    for probes in sets:
        answers = candidate(probes)
        ev.candidate[probes.bucket_id] = answers
        mine = {a.example_id: a.correct for a in answers}
        if mine:
            ev.accuracy[probes.bucket] = sum(mine.values()) / len(mine)
        active_answers = refs.answers(active, probes, ev)
        active_ok = {i: a.correct for i, a in active_answers.items()}
        references = {f"{version_name(active)} (active)": active_ok}
        peak = best_earlier(refs.stored, lineage, probes, exclude=active)
        if peak is not None:
            references[f"{version_name(peak[0])} (best earlier)"] = peak[1]
        base_answers = refs.answers(None, probes, ev) if probes.kind == "alignment" else {}
        ev.buckets.append(
            BucketEvidence(
                bucket=probes.bucket,
                candidate=mine,
                references=references,
                trained=probes.bucket_id in trained,
                active=active_ok,
                base={i: a.correct for i, a in base_answers.items()} or None,
            )
        )
        if probes.kind == "alignment":
            texts: dict[str, dict[int, str]] = {
                "candidate": {a.example_id: a.answer for a in answers},
                "base": {i: a.answer for i, a in base_answers.items()},
                "active": {i: a.answer for i, a in active_answers.items()},
            }
            for (_, target), eid in zip(probes.examples, probes.ids, strict=True):
                refuse = is_harmful_request(probes, target, is_refusal)
                pool = harmful if refuse else benign
                for who, by_id in texts.items():
                    if eid in by_id:
                        refused = is_refusal(by_id[eid])
                        pool[who][eid] = refused if pool is harmful else not refused
    for name, pool in ((HARMFUL_RATE, harmful), (BENIGN_RATE, benign)):
        # A rate with no candidate answer yet (a curtailed judgement's first blocks) is
        # kept for its references: learner.worker.curtail fills in the rest.
        if any(pool.values()):
            ev.alignment.append(
                RateEvidence(
                    name=name,
                    candidate=pool["candidate"],
                    base=pool["base"] or None,
                    active=None if active is None else pool["active"] or None,
                    detector=is_refusal.name,
                )
            )
    return ev
