"""Settings of the builtin models and context limits, without importing torch.

The server needs a model's context length (to reject over-long examples at ingestion)
long before, or without ever, loading the model; everything here reads JSON only.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from hashlib import sha256
from pathlib import Path

from learner.builtin import families as tasks
from learner.validation import NON_NEGATIVE, above, validate

MIN_CONTEXT = 256  # tokens (= characters for the builtin tokenizer)
BUILTIN_PREFIX = "builtin:"
#: The service's default base (``LIFELONG_BASE_MODEL``): measured on bench/frontier.py, it
#: learns new families faster per CPU-minute than ``tiny`` and keeps its skills and its
#: refusals better; its weights ship with the package.
DEFAULT_PRESET = "sturdy"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ABOVE_ZERO = above(0)


@dataclass(frozen=True)
class BuiltinConfig:
    """Architecture and bootstrap-training settings of a builtin model (validated on creation).

    Use a preset: ``BuiltinConfig.preset("sturdy")`` (the service default, shipped),
    ``"tiny"`` (trained in about 3 minutes at first use), ``"small"`` or ``"micro"``
    (tests); ``dataclasses.replace`` derives variants, which must get a new ``name``.
    """

    name: str = "tiny"
    hidden_size: int = field(default=128, metadata=_ABOVE_ZERO)
    num_layers: int = field(default=4, metadata=_ABOVE_ZERO)
    num_heads: int = field(default=4, metadata=_ABOVE_ZERO)
    intermediate_size: int = field(default=512, metadata=_ABOVE_ZERO)
    max_position_embeddings: int = 256
    steps: int = field(default=1600, metadata=_ABOVE_ZERO)
    # more small steps beat fewer big ones at this size (CPU-bound)
    batch_size: int = field(default=32, metadata=_ABOVE_ZERO)
    learning_rate: float = field(default=3e-3, metadata=_ABOVE_ZERO)
    warmup_steps: int = field(default=100, metadata=NON_NEGATIVE)
    weight_decay: float = field(default=0.01, metadata=NON_NEGATIVE)
    grad_clip: float = field(default=1.0, metadata=NON_NEGATIVE)
    num_checkpoints: int = 3
    seed: int = 0
    # 0: every core this process may use
    num_threads: int = field(default=0, metadata=NON_NEGATIVE)
    eval_examples: int = 50  # per family, greedy exact match after training (0: skip)
    mix: tuple[tuple[str, int, float], ...] = tasks.FOUNDATION_MIX

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"name must match {_NAME_RE.pattern}, got {self.name!r}")
        validate(self, "{name} {says}, got {value}")
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.max_position_embeddings < MIN_CONTEXT:
            raise ValueError(f"max_position_embeddings must be >= {MIN_CONTEXT}")
        if not 0 <= self.num_checkpoints < self.steps:
            raise ValueError("num_checkpoints must be in [0, steps)")
        if self.eval_examples < 0:
            raise ValueError("eval_examples must be >= 0")
        for family, level, _ in self.mix:
            tasks.check_level(tasks.get_family(family), level)

    @classmethod
    def preset(cls, name: str) -> BuiltinConfig:
        """The named preset (``tiny`` or ``micro``)."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown builtin preset {name!r}; known: {sorted(PRESETS)}") from None

    def fingerprint(self) -> str:
        """Short hash of every setting: a cached model is reused only for the same one."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return sha256(blob).hexdigest()[:16]


PRESETS: dict[str, BuiltinConfig] = {
    "tiny": BuiltinConfig(),
    # For tests: ~24k parameters, trains in about a second, learns nothing useful. One thread:
    # matrices this small gain nothing from more, and threads spin badly on a busy machine.
    "micro": BuiltinConfig(name="micro", hidden_size=32, num_layers=2, num_heads=2,
                           intermediate_size=64, steps=40, batch_size=16, learning_rate=1e-2,
                           warmup_steps=5, eval_examples=4, num_threads=1),
    # The tiny architecture with a short bootstrap: it knows its skills a little, enough
    # for LoRA to teach it a new one quickly. For end-to-end tests and the learner
    # benchmark. One thread, so that it is the same model everywhere; its weights ship, so
    # no test session spends minutes (per xdist worker) training it.
    "small": BuiltinConfig(name="small", steps=500, warmup_steps=30, batch_size=32,
                           num_checkpoints=1, eval_examples=0, num_threads=1),
    # A sturdier base, measured against tiny on bench/frontier.py: 2.25x the width, 2.5x the
    # bootstrap, the broader STURDY_MIX with the wide alignment set. One thread, so that the
    # same settings give the same weights on every machine (thread counts change the sums).
    "sturdy": BuiltinConfig(name="sturdy", hidden_size=192, num_heads=6,
                            intermediate_size=768, steps=4000, warmup_steps=200,
                            learning_rate=2e-3, num_threads=1, mix=tasks.STURDY_MIX),
}  # fmt: skip


#: Presets whose trained weights ship with the package (``learner/builtin/weights/<name>``,
#: written by :func:`learner.builtin.model.pack_weights`), each pinned by the sha256 of its
#: manifest (which holds every file's sha256): a first start copies them, checked, instead
#: of training for minutes. ``lifelong builtin train --preset NAME --rebuild`` trains them
#: again from the seeded recipe (one torch thread) and says whether the final weights match.
SHIPPED_WEIGHTS: dict[str, str] = {
    "sturdy": "4d6144778d55099a68087d12aee99318d83f5531d60ff9ce8f854196ea2408ba",
    "small": "d0a5561069ea07c4a1af64fadf6ce44f911847cb78c0d75f30d09c5b82041d39",
}
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


def max_context_chars(model_dir: Path | str) -> int:
    """How many prompt+answer characters fit in the model's context (BOS and EOS reserved).

    Exact for the builtin character-level tokenizer. For subword tokenizers it is the token
    budget, a conservative bound for ASCII text (every such token covers >= 1 character).
    """
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    keys = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
    limits = [int(config[k]) for k in keys if isinstance(config.get(k), int)][:1]
    tok_config = model_dir / "tokenizer_config.json"
    if tok_config.is_file():
        tok_max = json.loads(tok_config.read_text()).get("model_max_length")
        if isinstance(tok_max, int) and tok_max < 10**9:  # HF uses 1e30 for "unset"
            limits.append(tok_max)
    if not limits:
        raise ValueError(f"{model_dir}: config.json states no context length")
    return min(limits) - 2


def context_chars_for(spec: str) -> int:
    """Context limit in characters of ``LIFELONG_BASE_MODEL`` (a preset or a directory)."""
    if spec.startswith(BUILTIN_PREFIX):
        return BuiltinConfig.preset(spec.removeprefix(BUILTIN_PREFIX)).max_position_embeddings - 2
    return max_context_chars(Path(spec).expanduser())


def is_builtin_model(spec: str) -> bool:
    """``builtin:<preset>``, or a directory holding a trained builtin model (its
    ``provenance.json`` names the preset): either way the builtin alignment suite fits it."""
    if spec.startswith(BUILTIN_PREFIX):
        return True
    try:
        provenance = json.loads((Path(spec).expanduser() / "provenance.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(provenance, dict) and str(provenance.get("model", "")).startswith(
        BUILTIN_PREFIX
    )


def builtin_mix(spec: str) -> tuple[tuple[str, int, float], ...] | None:
    """The bootstrap mix of a builtin base (a preset, or a directory whose provenance names
    its config); None for any other model."""
    if spec.startswith(BUILTIN_PREFIX):
        return BuiltinConfig.preset(spec.removeprefix(BUILTIN_PREFIX)).mix
    try:
        provenance = json.loads((Path(spec).expanduser() / "provenance.json").read_text())
        mix = provenance["config"]["mix"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return tuple((str(f), int(level), float(w)) for f, level, w in mix)
