"""Service settings, read from the environment (prefix ``LIFELONG_``, nested with ``__``).

Settings live only at the edge: the CLI and ``create_app`` turn them into the small config
dataclasses that each component takes (for example :class:`learner.store.ingest.IngestLimits`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from learner.builtin.config import BUILTIN_PREFIX, DEFAULT_PRESET, is_builtin_model
from learner.config import DifficultyConfig, LearnerConfig, RetentionConfig, TeacherConfig
from learner.evaluation.gate import GateConfig
from learner.replay.config import ReplayConfig
from learner.store.ingest import IngestLimits

SuiteMode = Literal["auto", "builtin", "general", "off"]


def _suite_mode(value: Any) -> Any:
    """``true``/``false`` (the setting's earlier, boolean form) mean auto/off."""
    text = str(value).strip().lower()
    on, off = ("true", "1", "yes", "on", "y", "t"), ("false", "0", "no", "n", "f")
    return "auto" if text in on else "off" if text in off else text


class LimitSettings(BaseModel):
    """Request limits; over-long fields get 422, too many examples or too big a body 413."""

    max_examples_per_request: int = Field(default=5000, ge=1)
    max_prompt_chars: int = Field(default=8192, ge=1)
    max_target_chars: int = Field(default=8192, ge=1)
    # Bodies of POST /v1/tasks (batches of examples) ...
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # ... and of every other route, completions included.
    max_other_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Serving: a completion request holds the one inference thread for its whole batch,
    # padded to its longest prompt, so its size is bounded on every axis.
    max_prompts: int = Field(default=64, ge=1)
    max_messages: int = Field(default=64, ge=1)
    max_stop: int = Field(default=4, ge=0)
    max_stop_chars: int = Field(default=64, ge=1)
    # Prompts x (longest prompt + max_tokens) tokens: what the padded batch costs.
    max_request_tokens: int = Field(default=16_384, ge=1)
    # Completions waiting for or in inference; beyond it 429 with Retry-After.
    max_queued_completions: int = Field(default=8, ge=1)

    def ingest_limits(self, context_chars: int | None = None, model: str = "") -> IngestLimits:
        return IngestLimits(
            max_examples=self.max_examples_per_request,
            max_prompt_chars=self.max_prompt_chars,
            max_target_chars=self.max_target_chars,
            max_example_chars=context_chars,
            model=f"the base model {model}" if model else "the base model",
        )


class VllmSettings(BaseModel):
    """The vLLM backend's engine settings (``LIFELONG_VLLM__...``)."""

    # Adapter versions vLLM holds at once (the active one is never unloaded).
    max_loras: int = Field(default=4, ge=1)
    # 0: the learner's LoRA rank (LIFELONG_LEARNER__LORA__R).
    max_lora_rank: int = Field(default=0, ge=0)
    gpu_memory_utilization: float = Field(default=0.5, gt=0, le=1)


class Settings(BaseSettings):
    """Everything configurable about one service instance (DESIGN section 10)."""

    model_config = SettingsConfigDict(
        env_prefix="LIFELONG_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path("./lifelong-data")
    database_url: str | None = None
    base_model: str = f"{BUILTIN_PREFIX}{DEFAULT_PRESET}"
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Comma-separated ``scope:key`` entries; held in memory as hashes, never written anywhere.
    api_keys: str = ""
    # How long a verified key is trusted before the database is asked again (revocations
    # made with `lifelong keys revoke` take effect within this delay).
    auth_cache_seconds: float = Field(default=2.0, ge=0)
    # Unknown keys are remembered as misses this long (a flood of made-up keys costs one
    # query per key and interval); a key created after it was tried works after this delay.
    auth_miss_cache_seconds: float = Field(default=5.0, ge=0)
    # An address with this many failed authentications within the window gets 429 for keys
    # not known to be valid, before any database lookup.
    auth_failure_limit: int = Field(default=20, ge=1)
    auth_failure_window_seconds: float = Field(default=10.0, gt=0)
    # Start loading the base model for serving at start-up rather than at the first
    # completion request (`lifelong serve` turns this on unless the variable is set).
    preload_model: bool = False
    # CPU threads for serving completions (the learner process uses the other cores).
    inference_threads: int = Field(default=1, ge=1)
    # Who decodes completions: transformers (default, CPU or GPU) or vllm (the optional
    # extra `lifelong[vllm]`, CUDA only; server/serving/vllm_engine.py).
    serving_backend: Literal["transformers", "vllm"] = "transformers"
    vllm: VllmSettings = VllmSettings()
    limits: LimitSettings = LimitSettings()
    learner: LearnerConfig = LearnerConfig()
    replay: ReplayConfig = ReplayConfig()
    teacher: TeacherConfig = TeacherConfig()
    difficulty: DifficultyConfig = DifficultyConfig()
    gate: GateConfig = GateConfig()
    retention: RetentionConfig = RetentionConfig()
    # The alignment suite created at first start (the gate's alignment check needs one):
    # auto: a builtin base gets its builtin suites (alignment-l1.., foundation-*), any
    # other model the general suite (learner.evaluation.general_suite, answered by the base
    # model itself); builtin or general: that one; off: none. true/false: auto/off.
    alignment_suite: Annotated[SuiteMode, BeforeValidator(_suite_mode)] = "auto"
    # Tokens of each base-model answer that becomes a general-suite target.
    general_suite_answer_tokens: int = Field(default=64, ge=1)

    def suite_kind(self) -> Literal["builtin", "general"] | None:
        """Which alignment suite this base model gets (None: none)."""
        if self.alignment_suite == "off":
            return None
        if self.alignment_suite == "auto":
            return "builtin" if is_builtin_model(self.base_model) else "general"
        return self.alignment_suite

    def resolved_database_url(self) -> str:
        """The configured URL, or a SQLite file inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'lifelong.db').resolve()}"
