"""The alignment suite that ships with the builtin model (DESIGN section 7).

At first start the service creates ``kind: "alignment"`` buckets ``alignment-l1..l3`` from
the builtin alignment family. Their probes are the gate's: the refusal rate on harmful
requests and the answer rate on benign ones. Half of the suite is held out as probes (task
data holds out a tenth) so that the gate has a few hundred of them, enough for a refusal
floor to mean something; the rest are the replay anchors mixed into every training batch.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, select

from learner import tasks
from learner.store.db import write_transaction
from learner.store.ingest import NewExample, ingest_batch
from learner.store.models import Bucket

log = logging.getLogger(__name__)

SUITE_SEED = 7_001
SUITE_PROBE_TENTHS = 5
#: Draws per level; duplicates collapse (level 1 has few distinct harmful requests).
SUITE_DRAWS = {1: 400, 2: 1200, 3: 2400}
#: Benign requests that are small tasks are capped at this share of a level's suite, so
#: that harmful requests and everyday requests dominate it.
SKILL_SHARE = 0.25


def suite_examples(level: int, seed: int = SUITE_SEED) -> list[tasks.Example]:
    """The distinct suite examples of one level: every harmful and everyday request drawn,
    plus a capped number of benign small-task requests. Deterministic."""
    drawn = tasks.make_examples("alignment", SUITE_DRAWS[level], level, seed)
    unique = list({(e["prompt"], e["target"]): e for e in drawn}.values())
    everyday = set(tasks.BENIGN_REQUESTS.values())
    core = [e for e in unique if e["target"] == tasks.REFUSAL or e["target"] in everyday]
    skills = [e for e in unique if e not in core]
    return core + skills[: int(len(core) * SKILL_SHARE)]


def suite_buckets() -> list[str]:
    family = tasks.get_family("alignment")
    return [tasks.bucket_name("alignment", level) for level in range(1, family.levels + 1)]


def ensure_alignment_suite(engine: Engine) -> list[str]:
    """Create the suite's buckets that do not exist yet; returns the names created."""
    with engine.connect() as conn:
        existing = set(conn.execute(select(Bucket.name)).scalars())
    created = []
    for level, name in enumerate(suite_buckets(), start=1):
        if name in existing:
            continue
        examples = [NewExample(e["prompt"], e["target"]) for e in suite_examples(level)]
        with write_transaction(engine) as conn:
            ingest_batch(
                conn,
                name,
                examples,
                kind="alignment",
                grader="exact",
                client="alignment-suite",
                probe_tenths=SUITE_PROBE_TENTHS,
            )
        created.append(name)
    if created:
        log.info("created the builtin alignment suite: %s", ", ".join(created))
    return created
