"""Curtailed judging gives the verdicts of judging every probe: on 150 seeded synthetic
candidates (gains, forgetting, lost refusals and over-refusals of every size, at every
scale of the scale search) the trials and the final verdict and scale are the same with
4 looks as with 1, while the curtailed search answers fewer probes."""

from __future__ import annotations

import numpy as np
import pytest

from learner.builtin.families import REFUSAL
from learner.evaluation.gate import GateConfig
from learner.evaluation.probes import ProbeAnswer
from learner.evaluation.refusal import RefusalConfig, make_detector
from learner.store.evaluations import StoredAnswer
from learner.store.probes import ProbeSet
from learner.worker.curtail import block_ids
from learner.worker.evidence import Answerer, References
from learner.worker.scale_search import SearchResult, search_scale

PATTERNS = make_detector(RefusalConfig(), GateConfig().refusals)
ACTIVE = 7


def scenario(seed: int) -> tuple[list[ProbeSet], References, object]:
    """Three task buckets (the first trained) and an alignment bucket; the active
    version's stored answers; a candidate whose effects grow with the scale."""
    rng = np.random.default_rng(seed)
    sets = [
        ProbeSet(
            b + 1,
            f"task-{b}",
            "exact",
            tuple(("p", "t") for _ in range(64)),
            tuple(range(1000 * (b + 1), 1000 * (b + 1) + 64)),
        )
        for b in range(3)
    ]
    harmful = tuple(("bad", REFUSAL) for _ in range(60))
    benign = tuple(("good", "ok") for _ in range(60))
    sets.append(ProbeSet(9, "alignment-l1", "exact", harmful + benign,
                         tuple(range(9000, 9120)), "alignment"))  # fmt: skip
    active: dict[int, StoredAnswer] = {}
    base: dict[int, StoredAnswer] = {}
    for probes in sets[:3]:
        accuracy = rng.uniform(0.2, 0.9)
        for i in probes.ids:
            right = bool(rng.random() < accuracy)
            active[i] = StoredAnswer(right, "t" if right else "?")
    refuse_rate = rng.uniform(0.85, 1.0)
    for (_, target), i in zip(sets[3].examples, sets[3].ids, strict=True):
        kept = bool(rng.random() < refuse_rate)
        text = target if kept else ("sure" if target == REFUSAL else REFUSAL)
        active[i] = base[i] = StoredAnswer(text == target, text)
    gain, forget = rng.uniform(0.0, 0.5), rng.uniform(0.0, 0.4)
    lose_refusals, over_refuse = rng.choice([0.0, 0.05, 0.3]), rng.choice([0.0, 0.05, 0.3])
    draws = {i: rng.random() for p in sets for i in p.ids}

    def answer_at(scale: float) -> Answerer:
        def run(probes: ProbeSet) -> list[ProbeAnswer]:
            out = []
            for (_, target), i in zip(probes.examples, probes.ids, strict=True):
                was = active[i]
                u = draws[i]
                # By id (answers may be asked for several sets at once): task-0's are
                # 1000-1063, the other tasks' up to 3063, the alignment probes 9000 on.
                if i < 1064:  # task-0, trained: gains
                    right = was.correct or u < gain * scale
                    out.append(ProbeAnswer(i, right, "t" if right else "?"))
                elif i < 9000:  # the other tasks: forgetting
                    right = was.correct and u >= forget * scale
                    out.append(ProbeAnswer(i, right, "t" if right else "?"))
                else:
                    flip = lose_refusals if target == REFUSAL else over_refuse
                    text = was.answer
                    if u < flip * scale:
                        text = "sure" if target == REFUSAL else REFUSAL
                    out.append(ProbeAnswer(i, text == target, text))
            return out

        return run

    refs = References({ACTIVE: active, None: base}, {})
    return sets, refs, answer_at


def run(seed: int, looks: int) -> tuple[SearchResult, int]:
    sets, refs, answer_at = scenario(seed)
    asked = 0

    def counting(scale: float) -> Answerer:
        inner = answer_at(scale)  # type: ignore[operator]

        def answer(probes: ProbeSet) -> list[ProbeAnswer]:
            nonlocal asked
            asked += len(probes.ids)
            return inner(probes)  # type: ignore[no-any-return]

        return answer

    gate = GateConfig(looks=looks)
    parents = {ACTIVE: None}
    result = search_scale(sets, counting, refs, ACTIVE, parents, {1}, gate, PATTERNS)
    return result, asked


@pytest.mark.parametrize("chunk", range(2))
def test_curtailed_search_gives_the_same_decisions(chunk: int) -> None:
    verdicts: dict[str, int] = {}
    saved = 0
    for seed in range(chunk * 75, chunk * 75 + 75):
        full, asked_full = run(seed, looks=1)
        curtailed, asked = run(seed, looks=4)
        trials = [(t.scale, t.part, t.verdict) for t in full.trials]
        assert [(t.scale, t.part, t.verdict) for t in curtailed.trials] == trials, seed
        assert (curtailed.report.verdict, curtailed.scale) == (full.report.verdict, full.scale)
        assert asked <= asked_full, seed
        saved += asked < asked_full
        verdicts[full.report.verdict] = verdicts.get(full.report.verdict, 0) + 1
    assert len(verdicts) == 3, verdicts  # promotions, holds and rejections among them
    assert saved >= 15, saved  # and curtailment did stop early, often


def test_blocks_cover_each_set_in_order() -> None:
    probes = ProbeSet(1, "b", "exact", tuple(("p", "t") for _ in range(10)), tuple(range(10)))
    assert block_ids([probes], 1, 4) == {0, 1, 2}
    assert block_ids([probes], 4, 4) == set(range(10))
