"""Config dataclasses of the learner's components, validated in ``__post_init__``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def _positive(obj: object, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be positive")


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA adapter trained on top of the frozen base model (peft ``LoraConfig``)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    # "all-linear" lets peft find the projection layers of any architecture (Llama's
    # q_proj/..., GPT-2's c_attn/...), always leaving the output head alone.
    target_modules: str | tuple[str, ...] = "all-linear"

    def __post_init__(self) -> None:
        _positive(self, "r", "alpha")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("LoraSettings.dropout must be in [0, 1)")


@dataclass(frozen=True)
class LearnerConfig:
    """How the learner worker trains, evaluates and versions its adapter."""

    lora: LoraSettings = field(default_factory=LoraSettings)
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    max_length: int = 256
    # Every `candidate_every` steps a candidate version is saved, evaluated on the probes
    # and promoted if it raises the mean probe accuracy of the buckets it trained on.
    candidate_every: int = 100
    checkpoint_every: int = 50
    min_gain: float = 0.0
    # Shares of a batch: the focus bucket, alignment anchors, and (the rest) prioritized
    # replay across all buckets.
    focus_share: float = 0.5
    anchor_share: float = 0.2
    max_new_tokens: int = 32
    eval_max_probes: int = 64
    poll_seconds: float = 1.0
    lease_seconds: float = 15.0
    seed: int = 0
    device: str = "auto"
    # CPU threads for torch; 0: all cores but one, which is left to the server process
    # (two processes spinning threads on the same cores slow each other down badly).
    num_threads: int = 0
    max_steps: int | None = None

    def __post_init__(self) -> None:
        _positive(
            self,
            "learning_rate",
            "batch_size",
            "max_length",
            "candidate_every",
            "checkpoint_every",
            "max_new_tokens",
            "eval_max_probes",
            "poll_seconds",
            "lease_seconds",
        )
        if not (0 < self.focus_share <= 1 and 0 <= self.anchor_share < 1):
            raise ValueError("LearnerConfig: focus_share in (0, 1], anchor_share in [0, 1)")
        if self.focus_share + self.anchor_share > 1:
            raise ValueError("LearnerConfig: focus_share + anchor_share must be <= 1")
        if self.num_threads < 0:
            raise ValueError("LearnerConfig.num_threads must be >= 0")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError("LearnerConfig.max_steps must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LearnerConfig:
        data = dict(data)
        lora = data.pop("lora", {}) or {}
        if isinstance(lora.get("target_modules"), list):
            lora["target_modules"] = tuple(lora["target_modules"])
        return cls(lora=LoraSettings(**lora), **data)


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings of one completion request."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
