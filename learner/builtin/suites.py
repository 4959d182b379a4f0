"""The suites that ship with the builtin model (DESIGN section 7): what it must keep.

At first start the service creates ``kind: "alignment"`` buckets ``alignment-l1..l3`` from
the builtin alignment family. Their probes are the gate's: the refusal rate on harmful
requests and the answer rate on benign ones. Half of the suite is held out as probes (task
data holds out a tenth) so that the gate has a few hundred of them, enough for a refusal
floor to mean something; the rest are the replay anchors mixed into every training batch.

Beside it, the *foundation suite*: one bucket per skill of the builtin's bootstrap mix
(``foundation-copy-l1``, ...), of the same kind, so that what the base model already knows
is treated like alignment: never a training focus, rehearsed as anchors in every batch,
and checked for forgetting at every candidate. Without it, nothing in the store describes
those skills: measured with ``bench/frontier.py`` (builtin ``tiny``, 5 CPU-minutes of
sort), the served model lost 18-27 points of foundation accuracy while the gate, seeing
only the new bucket and the alignment suite, let the versions through. A bucket kind
means what the learner does with it, and "alignment" is the kind whose behaviour is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Engine

from learner.builtin import families as tasks
from learner.store.buckets import bucket_names
from learner.store.db import write_transaction
from learner.store.ingest import NewExample, ingest_batch

log = logging.getLogger(__name__)
Mix = Sequence[tuple[str, int, float]]

SUITE_SEED = 7_001
SUITE_PROBE_TENTHS = 5
#: Draws per level; duplicates collapse (level 1 has few distinct harmful requests).
SUITE_DRAWS = {1: 400, 2: 1200, 3: 2400, 4: 2400}
#: Every level a suite can have. A base's suite has the alignment levels of its bootstrap
#: mix: 1-3 for ``tiny``, 1-4 (the wide set) for ``sturdy``.
SUITE_LEVELS = tuple(sorted(SUITE_DRAWS))
#: Benign requests that are small tasks are capped at this share of a level's suite, so
#: that harmful requests and everyday requests dominate it.
SKILL_SHARE = 0.25


def suite_examples(level: int, seed: int = SUITE_SEED) -> list[tasks.Example]:
    """The distinct suite examples of one level: every harmful and everyday request drawn,
    plus a capped number of benign small-task requests. Deterministic."""
    drawn = tasks.make_examples("alignment", SUITE_DRAWS[level], level, seed)
    unique = list({(e["prompt"], e["target"]): e for e in drawn}.values())
    everyday = {*tasks.WIDE_BENIGN_REQUESTS.values(), *tasks.WIDE_LOOKALIKES.values()}
    core = [e for e in unique if e["target"] == tasks.REFUSAL or e["target"] in everyday]
    skills = [e for e in unique if e not in core]
    return core + skills[: int(len(core) * SKILL_SHARE)]


#: Examples drawn per foundation skill (duplicates collapse: addition-l1 has ~100 distinct);
#: half are gate probes, half anchors.
FOUNDATION_DRAWS = 120
FOUNDATION_SEED = 7_002


def foundation_skills(mix: Mix = tasks.FOUNDATION_MIX) -> list[tuple[str, int]]:
    """(family, level) of every skill of a builtin bootstrap mix besides alignment."""
    return [(family, level) for family, level, _ in mix if family != "alignment"]


def foundation_bucket(family: str, level: int) -> str:
    return f"foundation-{tasks.bucket_name(family, level)}"


def foundation_examples(
    family: str, level: int, seed: int = FOUNDATION_SEED
) -> list[tasks.Example]:
    """The distinct examples of one foundation bucket. Deterministic."""
    drawn = tasks.make_examples(family, FOUNDATION_DRAWS, level, seed)
    return list({(e["prompt"], e["target"]): e for e in drawn}.values())


def suite_levels(mix: Mix = tasks.FOUNDATION_MIX) -> list[int]:
    """The alignment levels of a bootstrap mix: the base learned them, the suite keeps them."""
    return sorted({level for family, level, _ in mix if family == "alignment"})


def suite_buckets(mix: Mix = tasks.FOUNDATION_MIX) -> list[str]:
    return [tasks.bucket_name("alignment", level) for level in suite_levels(mix)]


def ensure_alignment_suite(
    engine: Engine, foundation: bool = True, mix: Mix = tasks.FOUNDATION_MIX
) -> list[str]:
    """Create the suite's buckets that do not exist yet (with ``foundation``, the
    foundation suite's too) for a base bootstrapped on ``mix``; returns the names created."""
    with engine.connect() as conn:
        existing = bucket_names(conn)
    wanted: list[tuple[str, str, list[tasks.Example]]] = [
        (name, "exact", suite_examples(level))
        for level, name in zip(suite_levels(mix), suite_buckets(mix), strict=True)
        if name not in existing
    ]
    if foundation:
        for family, level in foundation_skills(mix):
            name = foundation_bucket(family, level)
            if name not in existing:
                grader = tasks.get_family(family).grader
                wanted.append((name, grader, foundation_examples(family, level)))
    for name, grader, examples in wanted:
        with write_transaction(engine) as conn:
            ingest_batch(
                conn,
                name,
                [NewExample(e["prompt"], e["target"]) for e in examples],
                kind="alignment",
                grader=grader,
                client="alignment-suite",
                probe_tenths=SUITE_PROBE_TENTHS,
            )
    created = [name for name, _, _ in wanted]
    if created:
        log.info("created the builtin suites: %s", ", ".join(created))
    return created
