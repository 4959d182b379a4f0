"""The SQL schema (DESIGN section 3) as SQLAlchemy 2.x typed ORM tables.

These classes are the storage layer only; the HTTP API has its own pydantic schemas. The
schema is created and changed only through Alembic revisions in ``migrations/``; the tests
check that autogenerate finds no difference between these models and the revisions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# A fixed naming convention makes constraint names identical on SQLite and PostgreSQL,
# which keeps migrations (and their downgrades) portable.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BUCKET_KINDS = ("task", "alignment")
# completion: {prompt, target}; chat: a conversation whose last turn is the target.
BUCKET_FORMATS = ("completion", "chat")
BUCKET_STATUSES = ("active", "paused")
SPLITS = ("train", "probe")
# pending: the version number is reserved and its files are being written (never served).
ADAPTER_STATUSES = ("pending", "candidate", "promoted", "rejected", "retired")
# reset: the learner went back to the active version's weights after repeated rejections
# (the active version does not change; the event records it in the same audit log).
REGISTRY_ACTIONS = ("promote", "rollback", "force", "reset")
KEY_SCOPES = ("read", "submit", "admin")
ANSWER_CHARS = 200  # stored length of a probe answer


def storable(text: str) -> str:
    """Model output as every database stores it: without NUL characters (PostgreSQL's text
    refuses them; a byte-level BPE model can emit one) and with lone surrogates replaced."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


# Ids of the tables that grow without bound (examples, and the logs appended to by the
# learner and by requests), and the columns that refer to them: 64-bit on PostgreSQL, where
# a 32-bit sequence runs out (every conflicting ``INSERT ... ON CONFLICT DO NOTHING`` burns
# a value too). Buckets and API keys are made by hand and adapter versions are numbered
# explicitly, so they keep 32 bits. SQLite keeps ``INTEGER``: it is 64-bit already, and
# only ``INTEGER PRIMARY KEY`` is the rowid alias that autoincrements.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def _example_id(**options: Any) -> Mapped[int]:
    """A reference to an example: 64-bit like its id (see ``BigId``), deleted with it."""
    return mapped_column(BigId, ForeignKey("examples.id", ondelete="CASCADE"), **options)


def _created_at() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), server_default=text("CURRENT_TIMESTAMP"), nullable=False
    )


class Base(DeclarativeBase):
    """Declarative base carrying the shared metadata and naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012


class Bucket(Base):
    """A task bucket: one arm of the teacher, with its grader."""

    __tablename__ = "buckets"
    __table_args__ = (
        CheckConstraint(_one_of("kind", BUCKET_KINDS), name="kind"),
        CheckConstraint(_one_of("status", BUCKET_STATUSES), name="status"),
        CheckConstraint(_one_of("format", BUCKET_FORMATS), name="format"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="task")
    grader: Mapped[str] = mapped_column(String(32), default="exact")
    format: Mapped[str] = mapped_column(String(16), server_default="completion")
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = _created_at()


class Example(Base):
    """One prompt/target pair. ``content_hash`` makes resubmission a no-op.

    In a chat bucket ``messages`` holds the submitted conversation (canonical JSON, the
    hashed content), ``prompt`` its turns before the last rendered by the base model's chat
    template with the generation prompt (what ``/v1/chat/completions`` sends the model),
    and ``target`` the last, assistant turn's content."""

    __tablename__ = "examples"
    __table_args__ = (
        UniqueConstraint("bucket_id", "content_hash", name="uq_examples_bucket_hash"),
        CheckConstraint(_one_of("split", SPLITS), name="split"),
        Index("ix_examples_bucket_split", "bucket_id", "split"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id", ondelete="CASCADE"))
    prompt: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    split: Mapped[str] = mapped_column(String(8))
    content_hash: Mapped[str] = mapped_column(String(64))
    messages: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(128))
    client: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created_at()


class _PerExample:
    """Mixin of a table of at most one row per example, keyed by the example's id."""

    # Mixin columns follow the class's own unless sorted first: the key stays the first
    # column, where the revisions put it.
    example_id: Mapped[int] = _example_id(primary_key=True, sort_order=-1)


class ReplayState(_PerExample, Base):
    """Prioritized-replay state of a train example; no row yet means 'new, max priority'."""

    __tablename__ = "replay_state"

    priority: Mapped[float] = mapped_column(Float)
    last_loss: Mapped[float | None] = mapped_column(Float)
    times_sampled: Mapped[int] = mapped_column(Integer, default=0)
    last_sampled_step: Mapped[int | None] = mapped_column(Integer)


class DifficultyScore(Base):
    """One ensemble member's answer to one example."""

    __tablename__ = "difficulty_scores"
    __table_args__ = (UniqueConstraint("example_id", "member", name="uq_difficulty_scores_item"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    example_id: Mapped[int] = _example_id()
    member: Mapped[str] = mapped_column(String(200))
    correct: Mapped[int | None] = mapped_column(Integer)
    mean_logprob: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = _created_at()


class ItemDifficulty(_PerExample, Base):
    """Fitted IRT parameters of an example (difficulty b, discrimination a, standard error)."""

    __tablename__ = "item_difficulty"

    difficulty: Mapped[float] = mapped_column(Float)
    std_error: Mapped[float | None] = mapped_column(Float)
    discrimination: Mapped[float | None] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(8), default="1pl")
    fitted_at: Mapped[datetime] = _created_at()


class AdapterVersion(Base):
    """A saved LoRA adapter with its provenance and gate report."""

    __tablename__ = "adapter_versions"
    __table_args__ = (CheckConstraint(_one_of("status", ADAPTER_STATUSES), name="status"),)

    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    parent_version: Mapped[int | None] = mapped_column(ForeignKey("adapter_versions.version"))
    base_model: Mapped[str] = mapped_column(String(500))
    path: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    train_step: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="candidate")
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    gate_report: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = _created_at()


class RegistryEvent(Base):
    """An append-only log entry of a change of the active adapter version."""

    __tablename__ = "registry_events"
    __table_args__ = (CheckConstraint(_one_of("action", REGISTRY_ACTIONS), name="action"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int | None] = mapped_column(ForeignKey("adapter_versions.version"))
    to_version: Mapped[int | None] = mapped_column(ForeignKey("adapter_versions.version"))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = _created_at()


class Evaluation(Base):
    """One cell of the accuracy matrix: adapter version x bucket (version NULL = base)."""

    __tablename__ = "evaluations"
    __table_args__ = (Index("ix_evaluations_bucket_version", "bucket_id", "adapter_version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    adapter_version: Mapped[int | None] = mapped_column(ForeignKey("adapter_versions.version"))
    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    at_step: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created_at()


class ProbeResult(Base):
    """One model's answer to one probe: (version, probe example) -> correct.

    The accuracy matrix (``evaluations``) and every retention metric derive from these rows.
    ``adapter_version`` NULL is the base model. A version's weights never change and answers
    are greedy, so an answer is stored once per (version, example) and reused as a reference.
    """

    __tablename__ = "probe_results"
    __table_args__ = (
        Index("ix_probe_results_version_example", "adapter_version", "example_id"),
        Index("ix_probe_results_bucket_version", "bucket_id", "adapter_version"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    adapter_version: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.version", ondelete="CASCADE")
    )
    example_id: Mapped[int] = _example_id()
    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id", ondelete="CASCADE"))
    correct: Mapped[bool] = mapped_column()
    # The answer itself, cut to ANSWER_CHARS: the gate tells refusals from answers with it.
    answer: Mapped[str] = mapped_column(Text, default="")
    at_step: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created_at()


class TeacherState(Base):
    """A snapshot of the teacher's state; the newest row is the current one."""

    __tablename__ = "teacher_state"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    step: Mapped[int] = mapped_column(Integer)
    policy: Mapped[str] = mapped_column(String(32))
    state: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = _created_at()


class TeacherDecision(Base):
    """One focus choice with the score of every arm and a readable reason."""

    __tablename__ = "teacher_decisions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    step: Mapped[int] = mapped_column(Integer, index=True)
    bucket_id: Mapped[int | None] = mapped_column(
        ForeignKey("buckets.id", ondelete="SET NULL"), index=True
    )
    scores: Mapped[dict[str, Any]] = mapped_column()
    reason: Mapped[str] = mapped_column(Text)
    # The round's outcome, filled in when the round ends: the focus bucket's probe accuracy
    # and mean training loss after the round, and the progress reward the policy got.
    policy: Mapped[str | None] = mapped_column(String(32))
    steps: Mapped[int | None] = mapped_column(Integer)
    accuracy: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    reward: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = _created_at()
    # A rest (no bucket) is one row per rest period: renewed, not repeated, while the
    # teacher keeps resting for the same reason; this is when it was last renewed.
    renewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    """An API key, stored as a SHA-256 hash with its scope."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(_one_of("scope", KEY_SCOPES), name="scope"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = _created_at()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LearnerLease(Base):
    """The training lease: one row per lease name, held by one worker with a heartbeat."""

    __tablename__ = "learner_lease"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ControlCommand(Base):
    """A control action (pause, resume, ...) for the learner, which polls this table."""

    __tablename__ = "control_commands"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    command: Mapped[str] = mapped_column(String(32))
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created_at()
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[str | None] = mapped_column(Text)
