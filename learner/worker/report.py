"""What the learner reports: its status (``GET /v1/learner``, stored in the lease row at
every renewal: the database is the only channel between the learner and the servers) and
the provenance every candidate version records."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from learner.curriculum.rounds import Curriculum
from learner.worker.parts import LearnerParts, PartsSpec
from learner.worker.resume import LoopState


def learner_status(
    state: LoopState,
    parts: LearnerParts | None,
    curriculum: Curriculum,
    paused: bool,
    base_model: str,
    device: str,
) -> dict[str, Any]:
    """The status document; ``parts`` is None before the learner is set up."""
    lineage = None if parts is None else parts.lineage.state
    round_now, rest = curriculum.current, curriculum.rest
    return {
        "step": state.step,
        "paused": paused,
        "examples_seen": state.examples_seen,
        "tokens_seen": state.tokens_seen,
        "last_loss": state.last_loss,
        "last_version": state.last_version,
        "last_verdict": state.last_verdict,
        "parent_version": None if lineage is None else lineage.parent,
        "consecutive_rejections": 0 if lineage is None else lineage.rejections,
        "tokens_per_second": 0.0 if parts is None else round(parts.trainer.tokens_per_second, 1),
        "buckets": 0 if parts is None else len(parts.batches.buckets),
        "train_examples": 0 if parts is None else len(parts.replay),
        "base_model": base_model,
        "device": device,
        "teacher": {
            "policy": curriculum.policy.name,
            "focus": None if round_now is None else round_now.arm,
            "resting": None if rest is None else rest.reason,
            "learner_ability": curriculum.ability,
        },
    }


def candidate_provenance(
    spec: PartsSpec, parts: LearnerParts, state: LoopState, base_model: str, policy: str
) -> dict[str, Any]:
    """What a candidate is made of: base model, step, data seen and every configuration."""
    return {
        "base_model": base_model,
        "base_model_dir": str(spec.model_dir),
        "train_step": state.step,
        "examples_seen": state.examples_seen,
        "tokens_seen": state.tokens_seen,
        "data_seen": dict(state.seen_per_bucket),
        "lora": _json_safe_lora(parts.trainer.lora.to_dict()),
        "learner": spec.config.to_dict(),
        "replay": asdict(spec.replay),
        "gate": spec.gate.to_dict(),
        "teacher_policy": policy,
    }


def _json_safe_lora(lora: dict[str, Any]) -> dict[str, Any]:
    """peft's ``LoraConfig.to_dict`` holds listed target modules as a set: sorted here."""
    return {k: sorted(v) if isinstance(v, set) else v for k, v in lora.items()}
