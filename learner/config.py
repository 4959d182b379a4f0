"""Config dataclasses of the learner's components, validated in ``__post_init__``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator

from learner.validation import NON_NEGATIVE, POSITIVE, one_of, optional, validate, within

if TYPE_CHECKING:
    from teacher.harm import HarmConfig


def _json_if_text(value: Any) -> Any:
    """Environment variables arrive as text: ``LIFELONG_TEACHER__OPTIONS='{"c": 0.05}'``."""
    return json.loads(value) if isinstance(value, str) else value


def _list_if_text(value: Any) -> Any:
    """A JSON list, or comma-separated entries: ``LIFELONG_DIFFICULTY__MEMBERS=a,b``."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [part.strip() for part in text.split(",") if part.strip()]


# Plain types for Python callers; pydantic (settings at the edge) honours the validators.
JsonDict = Annotated[dict[str, Any], BeforeValidator(_json_if_text)]
TextList = Annotated[tuple[str, ...], BeforeValidator(_list_if_text)]
FloatList = Annotated[tuple[float, ...], BeforeValidator(_list_if_text)]


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA adapter trained on top of the frozen base model (peft ``LoraConfig``)."""

    r: int = field(default=16, metadata=POSITIVE)
    alpha: int = field(default=32, metadata=POSITIVE)
    dropout: float = field(default=0.0, metadata=within(0, 1, "[)"))
    # "all-linear" lets peft find the projection layers of any architecture (Llama's
    # q_proj/..., GPT-2's c_attn/...), always leaving the output head alone.
    target_modules: str | tuple[str, ...] = "all-linear"
    # The adapter's size as a share of the base model's parameters: the rank is the
    # largest <= r whose trainable parameters stay within it (at least 1). None: rank r.
    # r=16 all-linear is 18% of the builtin tiny model, which then moved everywhere at
    # every step; 5% gives it r=4. On a model of a billion parameters 5% is far above
    # r=16, so there r stays the rank (learner.training.step.resolve_rank).
    # bench/frontier.py, builtin tiny, 5 CPU-min, 3 seeds each, same base: refusal
    # retention 98.2-99.0% (r=16: 95.2-99.0%), foundation forgetting 2.0/3.3/4.9 points
    # on counting/sort/rotate (r=16: 5.7/4.9/4.1), served gain +0.47/+0.24/+0.70
    # (+0.54/+0.29/+0.77): a little less gain for more retention on two families of three.
    capacity: float | None = field(
        default=0.05, metadata=optional(within(0, 1, "(]"), "must be in (0, 1] or None")
    )

    def __post_init__(self) -> None:
        validate(self)


ANCHOR_SAMPLING = ("uniform", "priority")


@dataclass(frozen=True)
class LearnerConfig:
    """How the learner worker trains, evaluates and versions its adapter."""

    lora: LoraSettings = field(default_factory=LoraSettings)
    learning_rate: float = field(default=3e-3, metadata=POSITIVE)
    # Linear warm-up after every fresh optimizer (the first start, a rollback, a reset):
    # a new AdamW's first updates are full-size steps in every direction (sign descent),
    # which knocked the refusal rate of the builtin model from 0.99 to 0.69 in one round.
    warmup_steps: int = 20
    weight_decay: float = 0.0
    batch_size: int = field(default=16, metadata=POSITIVE)
    max_length: int = field(default=256, metadata=POSITIVE)
    # Every `candidate_every` steps a candidate version is saved, evaluated on the probes
    # of every learned bucket and gated (GateConfig: retention, alignment, gain).
    candidate_every: int = field(default=100, metadata=POSITIVE)
    # Evaluate candidates on a replica of the model in a background thread while training
    # goes on (learner.training.replica); off: training waits for every evaluation.
    # bench/learner_loop.py: 0.83-0.87x a bare peft loop's tokens/s inline, 0.95-0.97x
    # with this on (two runs each);
    # but on 2 cores the judge then competes with training, and candidates take longer to
    # be promoted (tests/e2e took 795 s with it on; the whole suite takes 554 s with it
    # off): off by default.
    background_candidates: bool = False
    # On CUDA (where supported): train under bf16 autocast; float32 everywhere else.
    bf16: bool = True
    # On a CPU, at most this many micro-batches of similar length per step (1: one
    # padded batch); see learner.training.grouping.
    length_groups: int = field(default=4, metadata=POSITIVE)
    checkpoint_every: int = field(default=50, metadata=POSITIVE)
    # Shares of a batch: the focus bucket, alignment anchors, and (the rest) prioritized
    # replay across all buckets.
    focus_share: float = 0.5
    anchor_share: float = 0.3
    # Loss weight of each anchor (focus and replay examples carry their importance weights,
    # at most 1). Measured on the small builtin model learning sort-l1 (lr 3e-3, 200 steps,
    # candidates every 40): with anchors at share 0.2 and weight 1 the refusal rate on the
    # suite's harmful probes fell from 0.98 to 0.73-0.93 and 4 of 5 candidates were
    # rejected; at share 0.3 and weight 3, 2 were promoted (+0.06, +0.09 on sort-l1) before
    # the drift showed.
    anchor_weight: float = field(default=3.0, metadata=POSITIVE)
    # How anchors are drawn: "uniform" over all alignment buckets together (each bucket in
    # proportion to its size), or "priority" from one alignment bucket chosen at random
    # per step (the highest-loss anchors, then the 15-example alignment-l1 got a third of
    # all anchor draws and refusals the model still gave were rarely rehearsed).
    anchor_sampling: str = field(default="uniform", metadata=one_of(ANCHOR_SAMPLING))
    # Weight of the distillation term: KL(base || model) on the anchors' answer tokens
    # (learner.training.step.Trainer._group_loss); 0 turns it off (no extra forward pass).
    # bench/frontier.py, sort on builtin tiny, 5 CPU-min, with scale search: served gain
    # +0.49 and refusal retention 99.3% with it, +0.40 and 94.4% without.
    distill_weight: float = field(default=1.0, metadata=NON_NEGATIVE)
    # The first answer tokens' share of the distillation term: the KL at the first
    # `distill_first_tokens` answer positions counts `distill_first_weight` times, the
    # rest once ("Safety Alignment Should Be Made More Than Just a Few Tokens Deep", Qi et
    # al. 2024: a refusal is decided in its first tokens, and fine-tuning moves those
    # most). 0 tokens: every position weighs the same.
    distill_first_tokens: int = 0
    distill_first_weight: float = 4.0
    # Cap on the length of probe answers. Each probe set is answered with its longest target
    # + 2 tokens, up to this cap, so the cap must exceed every target: at 32 the builtin
    # suite's benign answers (up to 40 characters) were cut short and graded wrong under
    # every version, so the gate could not see the alignment buckets being forgotten.
    max_new_tokens: int = field(default=256, metadata=POSITIVE)
    poll_seconds: float = field(default=1.0, metadata=POSITIVE)
    lease_seconds: float = field(default=15.0, metadata=POSITIVE)
    seed: int = 0
    device: str = "auto"
    # CPU threads for torch; 0: all cores but one, which is left to the server process
    # (two processes spinning threads on the same cores slow each other down badly).
    num_threads: int = 0
    max_steps: int | None = field(default=None, metadata=optional(NON_NEGATIVE))

    def __post_init__(self) -> None:
        validate(self)
        # Checks of several fields together (single fields declare theirs in metadata).
        if not (0 < self.focus_share <= 1 and 0 <= self.anchor_share < 1):
            raise ValueError("LearnerConfig: focus_share in (0, 1], anchor_share in [0, 1)")
        if self.focus_share + self.anchor_share > 1:
            raise ValueError("LearnerConfig: focus_share + anchor_share must be <= 1")
        if self.distill_first_tokens < 0 or self.distill_first_weight < 1:
            raise ValueError(
                "LearnerConfig: distill_first_tokens must be >= 0, distill_first_weight >= 1"
            )
        if self.num_threads < 0 or self.warmup_steps < 0:
            raise ValueError("LearnerConfig.num_threads and warmup_steps must be >= 0")

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


ROUND_ANSWERS = ("forced", "generated")


@dataclass(frozen=True)
class TeacherConfig:
    """How the learner consults the teacher (``teacher/``): the policy and its rounds.

    A round is ``round_steps`` training steps with the focus bucket the policy chose; at its
    end the focus bucket's probes (at most ``eval_probes``) are evaluated and the accuracy
    and mean loss are fed back to the policy as learning progress.
    """

    policy: str = "lp_zpd"
    options: JsonDict = field(default_factory=dict)  # fields of the policy's config
    round_steps: int = field(default=20, metadata=POSITIVE)
    eval_probes: int = field(default=32, metadata=POSITIVE)
    # teacher_state rows kept (the newest is the current one)
    snapshots_kept: int = field(default=10, metadata=POSITIVE)
    # Harm attribution (teacher.harm): after every round the refusal rate on this many
    # harmful alignment probes is measured; an arm whose last `harm_window` rounds lowered
    # it by `harm_max_drop` is quarantined (no focus, no replay). 0 turns it off.
    watch_probes: int = field(default=32, metadata=NON_NEGATIVE)
    harm_window: int = 3
    harm_max_drop: float = 0.4
    # A quarantined arm is released on probation after this many other rounds or seconds
    # (doubled at each new quarantine of the same arm).
    harm_probation_rounds: int = 10
    harm_probation_seconds: float = 300.0
    # When the policy decides to rest (no learnable arm), the learner trains nothing for
    # this long, or until a new bucket or new data arrives, then asks again.
    rest_seconds: float = field(default=30.0, metadata=POSITIVE)
    # How round-end and placement evaluations tell right answers: "forced", from the
    # teacher-forced pass that measures the held-out loss (for exact and numeric graders:
    # the greedy answer is the target iff every target token is the argmax), or
    # "generated", by decoding the answers as candidates do (other graders always do).
    round_answers: str = "forced"

    def harm_config(self) -> HarmConfig:
        """The harm watch's own config (validated there)."""
        from teacher.harm import HarmConfig

        return HarmConfig(
            self.harm_window,
            self.harm_max_drop,
            self.harm_probation_rounds,
            self.harm_probation_seconds,
        )

    def __post_init__(self) -> None:
        from teacher.policies import make_policy

        validate(self)
        if self.round_answers not in ROUND_ANSWERS:
            raise ValueError(
                f"TeacherConfig.round_answers must be one of {ROUND_ANSWERS}, "
                f"got {self.round_answers!r}"
            )
        self.harm_config()
        try:
            make_policy(self.policy, dict(self.options))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"TeacherConfig: {exc}") from exc


IRT_MODELS = ("1pl", "2pl")
IRT_RESPONSES = ("likelihood", "correctness")


@dataclass(frozen=True)
class DifficultyConfig:
    """The difficulty ensemble: which members score new examples, and when IRT is refit.

    ``members`` lists extra ensemble members besides the base model (and, for a builtin
    base, its bootstrap checkpoints): a local Hugging Face model directory, or an
    OpenAI-compatible endpoint written ``openai:<model>@<base url>`` (for example
    ``openai:lifelong@http://10.0.0.5:8000/v1``), asked with ``api_key`` if one is set.
    """

    enabled: bool = True
    members: TextList = ()
    include_builtin_checkpoints: bool = True
    api_key: str = field(default="", repr=False)  # never in logs or provenance
    batch_size: int = field(default=32, metadata=POSITIVE)
    # Cap on member answers (each batch gets its longest target + 2 tokens up to this): it
    # must exceed every target, or long answers are graded wrong (see LearnerConfig).
    max_new_tokens: int = field(default=256, metadata=POSITIVE)
    irt_model: str = field(default="1pl", metadata=one_of(IRT_MODELS))
    # What IRT is fitted to: "likelihood" (wrong answers score their per-token target
    # probability, so buckets every member fails still rank; teacher.irt
    # .likelihood_responses) or "correctness" (0/1 only).
    responses: str = field(default="likelihood", metadata=one_of(IRT_RESPONSES))
    # Refit when the number of scored examples grew by this share since the last fit.
    refit_growth: float = 0.25
    # Once caught up with new examples, the last few are fitted after at most this long.
    min_refit_seconds: float = 30.0
    min_items: int = field(default=8, metadata=POSITIVE)
    idle_seconds: float = 2.0
    request_timeout: float = field(default=60.0, metadata=POSITIVE)

    def __post_init__(self) -> None:
        validate(self)
        if min(self.refit_growth, self.idle_seconds, self.min_refit_seconds) < 0:
            raise ValueError(
                "DifficultyConfig: refit_growth, idle_seconds and min_refit_seconds must be >= 0"
            )


@dataclass(frozen=True)
class RetentionConfig:
    """How long the rows that only grow are kept, and how the learner prunes them.

    Pruning runs in the learner's idle time (and, when it is never idle, at least every
    ``busy_interval_seconds``), in transactions of at most ``batch_rows`` deletes each, so
    that ingestion never waits long for SQLite's write lock. The README's "Retention" table
    lists every table's rule (:mod:`learner.store.retention`).
    """

    enabled: bool = True
    # Teacher decisions and round outcomes: kept this many days after their last activity,
    # and never more than ``decision_rows`` rows (a busy learner ends a few thousand rounds
    # a day; a row is about 1 KB with a dozen buckets' scores).
    decision_days: float = field(default=30.0, metadata=POSITIVE)
    decision_rows: int = field(default=100_000, metadata=POSITIVE)
    # Processed control commands (pause, resume).
    command_days: float = field(default=7.0, metadata=POSITIVE)
    # Probe answers and accuracy cells of retired versions (files pruned) are removed.
    retired_probes: bool = True
    # Learner checkpoints on disk: the newest this many (each holds the adapter and AdamW).
    keep_checkpoints: int = field(default=2, metadata=POSITIVE)
    batch_rows: int = field(default=500, metadata=POSITIVE)
    # A pass at most this often while idle; while busy, at least this often.
    interval_seconds: float = field(default=60.0, metadata=NON_NEGATIVE)
    busy_interval_seconds: float = field(default=600.0, metadata=NON_NEGATIVE)
    # One pass stops after this long (the rest waits for the next pass).
    pass_seconds: float = field(default=2.0, metadata=POSITIVE)

    def __post_init__(self) -> None:
        validate(self)
