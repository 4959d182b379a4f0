"""Scale search at candidate time: serve the largest step towards the candidate that passes.

LoRA adds ``delta = B @ A * (alpha / r)`` to the frozen base weights, so multiplying every
``B`` by ``s`` serves ``base + s * delta``: ``s = 0`` is the base model (which passes every
retention check by construction) and ``s = 1`` the trained candidate. Interpolating the
fine-tuned weights towards the base keeps much of the new skill while losing much less of
the old behaviour (WiSE-FT, Wortsman et al. 2022, "Robust fine-tuning of zero-shot
models"; task arithmetic, Ilharco et al. 2023, "Editing Models with Task Arithmetic",
which scales task vectors the same way). Measured here before this was built: on the 25
candidates of a sort run that the gate rejected at ``s = 1``, 17 passed at 0.75 and all
at 0.5, keeping about 77% of the sort gain.

Once a version is active, the interpolation runs from the *active version's* adapter to
the candidate's (every LoRA parameter ``ref + s * (own - ref)``, :func:`interpolated`):
``s = 0`` is then the active version, which passed already, and a smaller step keeps what
it learned. (Scaling the whole delta from the base undid the active version's gain as
well: in a sort run every later candidate then failed its gain check.)

Trying several scales on the same probes would raise the chance that a harmful scale
passes by luck. So the probes are split in two fixed halves (by a hash of the example
id): the scale is *chosen* on the selection half (the largest that passes every check of
the gate) and *confirmed* once on the confirmation half, whose answers played no part in
the choice, so the confirmation keeps the gate's error rates. Each extra scale costs only
the candidate's answers on one half, and a scale that cannot pass stops early
(:mod:`learner.worker.curtail`): the base's and the active version's answers are stored
and reused (:class:`~learner.worker.evidence.References`).

When no scale is confirmed, the verdict is the unscaled candidate's on all probes, as
without a search (reject or hold); a verdict of "promote" there (possible when the halves
disagree) becomes "hold", since no scale passed both halves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from peft.utils import load_peft_weights
from safetensors.torch import save_file

from learner.evaluation.gate import (
    BucketEvidence,
    GateConfig,
    GateReport,
    RateEvidence,
    run_gate,
)
from learner.evaluation.probes import ProbeAnswer
from learner.evaluation.refusal import RefusalDetector
from learner.store.probes import ProbeSet
from learner.worker.curtail import curtailed
from learner.worker.evidence import (
    Answerer,
    CachedAnswers,
    Evidence,
    Model,
    References,
    gather,
    version_name,
)

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
    reference: str = "base"  # what scale 0 is: "base" or the active version, "v<N>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "from": self.reference,
            "selection": "halves: chosen on the selection half, confirmed on the other",
            "trials": [asdict(t) for t in self.trials],
        }


# --- the weights --------------------------------------------------------------------------

Weights = dict[str, torch.Tensor]  # LoRA parameters by peft's saved key (no adapter name)
_LORA_KEYS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")


def _is_b(key: str) -> bool:
    return any(f".{b}." in key or key.endswith(f".{b}") for b in _B_KEYS)


def _lora_params(model: torch.nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """The adapter's LoRA parameters by saved key: peft names a parameter
    ``...q_proj.lora_B.<adapter>.weight`` and saves it as ``...q_proj.lora_B.weight``."""
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        for key in _LORA_KEYS:
            marker = f".{key}.{adapter}"
            if f"{marker}." in name or name.endswith(marker):  # embeddings: no ".weight"
                out[name.replace(marker, f".{key}")] = p
    return out


def interpolated(own: Weights, reference: Weights | None, scale: float) -> Weights:
    """``reference + scale * (own - reference)`` for every LoRA parameter.

    ``reference`` is the active version's adapter (the weights this lineage was trained
    from); None stands for the base model, whose ``B`` is 0 (its ``A`` is taken as the
    candidate's own): then every ``B`` is simply multiplied by ``scale`` and the served
    model is ``base + scale * delta`` exactly. Against an active version both ``A`` and
    ``B`` move, so ``scale = 0`` is exactly the active version and 1 the candidate: a
    scale relative to the base would take back what the active version learned too (at
    0.5 it halved the promoted gain, and every later candidate failed its gain check).
    """
    out: Weights = {}
    for key, value in own.items():
        if reference is not None:
            ref = reference[key]
        else:
            ref = torch.zeros_like(value) if _is_b(key) else value
        out[key] = (ref + scale * (value - ref)).contiguous()
    return out


def matching_reference(model: torch.nn.Module, reference: Weights | None,
                       adapter: str = "default") -> Weights | None:  # fmt: skip
    """``reference`` if it has every LoRA parameter of the model with the same shape (a
    version trained under another LoRA config cannot be interpolated with), else None."""
    if reference is None:
        return None
    params = _lora_params(model, adapter)
    same = params.keys() == reference.keys() and all(
        reference[k].shape == p.shape for k, p in params.items()
    )
    return {k: v.to(params[k].device) for k, v in reference.items()} if same else None


@contextmanager
def scaled_adapter(
    model: torch.nn.Module,
    scale: float,
    reference: Weights | None = None,
    adapter: str = "default",
) -> Iterator[None]:
    """Inside the block the adapter holds :func:`interpolated` weights; afterwards its
    parameters are restored exactly (copied back, not recomputed: ``scale`` may be 0)."""
    if scale == 1.0:
        yield
        return
    params = _lora_params(model, adapter)
    saved = {k: p.detach().clone() for k, p in params.items()}
    try:
        with torch.no_grad():
            for key, value in interpolated(saved, reference, scale).items():
                params[key].copy_(value)
        yield
    finally:
        with torch.no_grad():
            for key, p in params.items():
                p.copy_(saved[key])


def write_scaled_weights(
    source: Path, dest: Path, scale: float, reference: Weights | None = None
) -> None:
    """Write ``source``'s adapter (config and weights) into ``dest`` with its LoRA
    parameters :func:`interpolated`: any peft loader serves it as is."""
    weights = load_peft_weights(str(source), device="cpu")
    lora = {k: v for k, v in weights.items() if any(f"{key}." in k for key in _LORA_KEYS)}
    scaled = {**weights, **interpolated(lora, reference, scale)}
    scaled = {k: v.contiguous() for k, v in scaled.items()}
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


@dataclass
class _Judge:
    """Runs the gate on one probe set list with the candidate at one scale."""

    refs: References
    active: Model
    parents: dict[int, int | None]
    trained: set[int]
    gate: GateConfig
    is_refusal: RefusalDetector
    fresh: list[Evidence] = field(default_factory=list)  # every gathered evidence

    def __call__(self, sets: list[ProbeSet], answer: CachedAnswers) -> tuple[Evidence, GateReport]:
        """The verdict, from as few blocks of probes as decide it (learner.worker.curtail);
        a probe is answered once however many looks ask for it."""
        return curtailed(sets, answer, self.gather, self.run_gate, self.is_refusal,
                         self.gate.looks)  # fmt: skip

    def gather(self, sets: list[ProbeSet], answer: Answerer) -> Evidence:
        """Every probe of ``sets`` that ``answer`` answers, with its references."""
        evidence = gather(sets, answer, self.refs, self.active, self.parents, self.trained,
                          self.is_refusal)  # fmt: skip
        self.fresh.append(evidence)
        return evidence

    def run_gate(self, buckets: list[BucketEvidence], alignment: list[RateEvidence]) -> GateReport:
        return run_gate(self.gate, buckets, alignment, version_name(self.active))


def search_scale(
    sets: list[ProbeSet],
    answer_at: ScaledAnswerer,
    refs: References,
    active: Model,
    parents: dict[int, int | None],
    trained: set[int],
    gate: GateConfig,
    is_refusal: RefusalDetector,
) -> SearchResult:
    """The largest of ``gate.scales`` confirmed by the gate, or the unscaled verdict."""
    judge = _Judge(refs, active, parents, trained, gate, is_refusal)
    scales = sorted(gate.scales, reverse=True)
    if len(scales) == 1:  # nothing to choose: the gate on every probe, as without a search
        evidence, report = judge(sets, CachedAnswers(answer_at(scales[0])))
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
                # Every probe answered (most are cached by now): the promoted version's
                # answers are every later candidate's reference.
                evidence = judge.gather(sets, answers[scale])
                result = SearchResult(scale, confirmed, evidence, trials)
                return _with_new_references(result, judge.fresh)
            break  # one confirmation only: a second try would spend its error rate again
        if report.verdict == "hold" and not report.failures:
            break  # it keeps everything but gains nothing: smaller scales gain less still
    evidence, report = judge(sets, answers[scales[0]])
    trials.append(ScaleTrial(scales[0], "all", report.verdict, report.summary))
    if report.verdict == "promote":
        summary = "kept as candidate: no scale passed on both probe halves"
        report = replace(report, verdict="hold", summary=summary)
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
