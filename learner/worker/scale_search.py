"""Scale search at candidate time: serve ``s * delta`` for the largest ``s`` the gate passes.

LoRA adds ``delta = B @ A * (alpha / r)`` to the frozen base weights, so multiplying every
``B`` by ``s`` serves ``base + s * delta``: ``s = 0`` is the base model (which passes every
retention check by construction) and ``s = 1`` the trained candidate. Interpolating the
fine-tuned weights towards the base keeps much of the new skill while losing much less of
the old behaviour (WiSE-FT, Wortsman et al. 2022, "Robust fine-tuning of zero-shot
models"; task arithmetic, Ilharco et al. 2023, "Editing Models with Task Arithmetic",
which scales task vectors the same way). Measured here before this was built: on the 25
candidates of a sort run that the gate rejected at ``s = 1``, 17 passed at 0.75 and all
at 0.5, keeping about 77% of the sort gain.

Trying several scales on the same probes would raise the chance that a harmful scale
passes by luck. So the probes are split in two fixed halves (by a hash of the example
id): the scale is *chosen* on the selection half (the largest that passes every check of
the gate) and *confirmed* once on the confirmation half, whose answers played no part in
the choice, so the confirmation keeps the gate's error rates. Each extra scale costs only
the candidate's answers on one half: the base's and the active version's answers are
stored and reused (:class:`~learner.worker.evidence.References`).

When no scale is confirmed, the verdict is the unscaled candidate's on all probes, as
without a search (reject or hold); a verdict of "promote" there (possible when the halves
disagree) becomes "hold", since no scale passed both halves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft.utils import load_peft_weights
from safetensors.torch import save_file

from learner.evaluation.gate import GateConfig, GateReport, run_gate
from learner.evaluation.probes import ProbeAnswer, ProbeSet
from learner.worker.evidence import Answerer, Evidence, Model, References, gather, version_name

ScaledAnswerer = Callable[[float], Answerer]  # scale -> the candidate's answers at that scale
_B_KEYS = ("lora_B", "lora_embedding_B")


@dataclass(frozen=True)
class ScaleTrial:
    """One gate run of the search: the scale, the probe half, the verdict and summary."""

    scale: float
    part: str  # selection | confirmation | all
    verdict: str
    summary: str


@dataclass
class SearchResult:
    """The chosen scale (1.0 when none was confirmed), the gate report and evidence that
    decide the candidate, and every trial."""

    scale: float
    report: GateReport
    evidence: Evidence
    trials: list[ScaleTrial] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "selection": "halves: chosen on the selection half, confirmed on the other",
            "trials": [asdict(t) for t in self.trials],
        }


# --- the weights --------------------------------------------------------------------------


def _lora_b(model: torch.nn.Module, adapter: str) -> list[torch.Tensor]:
    """The ``B`` matrices of ``adapter`` (peft names them ``...lora_B.<adapter>.weight``)."""
    return [
        p
        for name, p in model.named_parameters()
        if any(f".{key}.{adapter}." in name for key in _B_KEYS)
    ]


@contextmanager
def scaled_adapter(
    model: torch.nn.Module, scale: float, adapter: str = "default"
) -> Iterator[None]:
    """The model answers as ``base + scale * delta`` inside the block; afterwards its
    ``B`` matrices are restored exactly (copied back, not divided: ``scale`` may be 0)."""
    if scale == 1.0:
        yield
        return
    params = _lora_b(model, adapter)
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p in params:
                p.mul_(scale)
        yield
    finally:
        with torch.no_grad():
            for p, original in zip(params, saved, strict=True):
                p.copy_(original)


def scale_in_place(model: torch.nn.Module, scale: float, adapter: str = "default") -> None:
    """Multiply the adapter's ``B`` matrices by ``scale`` for good."""
    with torch.no_grad():
        for p in _lora_b(model, adapter):
            p.mul_(scale)


def write_scaled_weights(source: Path, dest: Path, scale: float) -> None:
    """Write ``source``'s adapter (config and weights) into ``dest`` with every ``B``
    multiplied by ``scale``: any peft loader then serves ``base + scale * delta`` as is."""
    weights = load_peft_weights(str(source), device="cpu")
    scaled = {
        k: (v * scale if any(f"{key}." in k for key in _B_KEYS) else v).contiguous()
        for k, v in weights.items()
    }
    save_file(scaled, str(dest / "adapter_model.safetensors"), metadata={"format": "pt"})
    (dest / "adapter_config.json").write_bytes((source / "adapter_config.json").read_bytes())


# --- the search ---------------------------------------------------------------------------


def in_selection_half(example_id: int) -> bool:
    """A fixed, content-blind half of the probes (Knuth's multiplicative hash of the id)."""
    return (example_id * 2654435761) % 2**32 < 2**31


def split_halves(sets: list[ProbeSet]) -> tuple[list[ProbeSet], list[ProbeSet]]:
    """Every probe set split into its selection and confirmation halves (empty ones
    dropped)."""
    selection: list[ProbeSet] = []
    confirmation: list[ProbeSet] = []
    for probes in sets:
        chosen = {i for i in probes.ids if in_selection_half(i)}
        for half, ids in ((selection, chosen), (confirmation, set(probes.ids) - chosen)):
            if ids:
                half.append(probes.only(ids))
    return selection, confirmation


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


@dataclass
class _Judge:
    """Runs the gate on one probe set list with the candidate at one scale."""

    refs: References
    active: Model
    parents: dict[int, int | None]
    trained: set[int]
    gate: GateConfig
    fresh: list[Evidence] = field(default_factory=list)  # every gathered evidence

    def __call__(self, sets: list[ProbeSet], answer: Answerer) -> tuple[Evidence, GateReport]:
        evidence = gather(sets, answer, self.refs, self.active, self.parents, self.trained,
                          self.gate)  # fmt: skip
        self.fresh.append(evidence)
        report = run_gate(self.gate, evidence.buckets, evidence.alignment,
                          version_name(self.active))  # fmt: skip
        return evidence, report


def search_scale(
    sets: list[ProbeSet],
    answer_at: ScaledAnswerer,
    refs: References,
    active: Model,
    parents: dict[int, int | None],
    trained: set[int],
    gate: GateConfig,
) -> SearchResult:
    """The largest of ``gate.scales`` confirmed by the gate, or the unscaled verdict."""
    judge = _Judge(refs, active, parents, trained, gate)
    scales = sorted(gate.scales, reverse=True)
    if len(scales) == 1:  # nothing to choose: the gate on every probe, as without a search
        evidence, report = judge(sets, answer_at(scales[0]))
        result = SearchResult(scales[0], report, evidence)
        result.trials.append(ScaleTrial(scales[0], "all", report.verdict, report.summary))
        return _with_new_references(result, judge.fresh)
    selection, confirmation = split_halves(sets)
    answers = {s: CachedAnswers(answer_at(s)) for s in scales}
    trials: list[ScaleTrial] = []
    for scale in scales:
        _, report = judge(selection, answers[scale])
        trials.append(ScaleTrial(scale, "selection", report.verdict, report.summary))
        if report.verdict == "promote":
            _, confirmed = judge(confirmation, answers[scale])
            trials.append(ScaleTrial(scale, "confirmation", confirmed.verdict, confirmed.summary))
            if confirmed.verdict == "promote":
                evidence, _ = judge(sets, answers[scale])  # every answer is cached by now
                result = SearchResult(scale, confirmed, evidence, trials)
                return _with_new_references(result, judge.fresh)
            break  # one confirmation only: a second try would spend its error rate again
        if report.verdict == "hold" and not report.failures:
            break  # it keeps everything but gains nothing: smaller scales gain less still
    evidence, report = judge(sets, answers[scales[0]])
    trials.append(ScaleTrial(scales[0], "all", report.verdict, report.summary))
    if report.verdict == "promote":
        summary = "kept as candidate: no scale passed on both probe halves"
        report = GateReport("hold", report.checks, report.thresholds, report.active, summary)
    return _with_new_references(SearchResult(scales[0], report, evidence, trials), judge.fresh)


def _with_new_references(result: SearchResult, gathered: list[Evidence]) -> SearchResult:
    """Every reference answer computed during the search goes to the store, whichever
    gather computed it."""
    merged: dict[Model, dict[int, list[ProbeAnswer]]] = {}
    for evidence in gathered:
        for model, by_bucket in evidence.new_reference.items():
            for bucket_id, answers in by_bucket.items():
                merged.setdefault(model, {}).setdefault(bucket_id, []).extend(answers)
    result.evidence.new_reference = merged
    return result
