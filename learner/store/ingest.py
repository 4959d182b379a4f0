"""Ingestion of task examples: hashing, split assignment and the idempotent batch insert.

An example is identified by the hash of (bucket, prompt, target). A batch is written in one
transaction with ``INSERT ... ON CONFLICT DO NOTHING`` on (bucket_id, content_hash), so
resubmitting an example (in the same batch, a later one or a concurrent request) is a
no-op counted as a duplicate, and either the whole batch is stored or none of it.

Hashes (and buckets) that are already stored are looked up first and left out of the
insert: on PostgreSQL every row that reaches ``ON CONFLICT DO NOTHING`` has already taken
a sequence value, so clients that resubmit their data would otherwise burn ids (which run
out, and leave gaps that the replay feed has to wait out). The conflict clause remains for
the race with a concurrent batch.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    String,
    Text,
    any_,
    bindparam,
    func,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY

from learner.evaluation.graders import GRADERS
from learner.store.models import BUCKET_KINDS, Bucket, Example

# \Z, not $: "$" also matches before a trailing newline, which let "name\n" through.
BUCKET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# One example in ten is held out for probing: the split is a pure function of the hash,
# so it never changes and every process computes the same answer.
PROBE_MODULUS = 10


class IngestError(ValueError):
    """Input that cannot be stored; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class IngestLimits:
    """Size limits applied to every ingested batch."""

    max_examples: int = 5000
    max_prompt_chars: int = 8192
    max_target_chars: int = 8192
    # What fits into the base model's context (prompt and target together), and the
    # model it comes from, for the error message; None when unknown.
    max_example_chars: int | None = None
    model: str = "the base model"

    def __post_init__(self) -> None:
        if min(self.max_examples, self.max_prompt_chars, self.max_target_chars) < 1:
            raise ValueError("ingest limits must be positive")
        if self.max_example_chars is not None and self.max_example_chars < 2:
            raise ValueError("max_example_chars must be at least 2")


@dataclass(frozen=True)
class NewExample:
    """One submitted example before it is stored."""

    prompt: str
    target: str
    external_id: str | None = None
    # A chat example's conversation (learner.model.chat.canonical_messages); its prompt is
    # the rendering of the turns before the last, its target the last turn's content.
    messages: str | None = None

    @property
    def format(self) -> str:
        return "completion" if self.messages is None else "chat"

    def content_hash(self, bucket: str) -> str:
        """A chat example's hash covers its canonical conversation."""
        if self.messages is not None:
            return content_hash(bucket, "chat", self.messages)
        return content_hash(bucket, self.prompt, self.target)


@dataclass(frozen=True)
class IngestResult:
    bucket: str
    accepted: int
    duplicates: int


def content_hash(bucket: str, prompt: str, target: str) -> str:
    """SHA-256 over an unambiguous encoding of (bucket, prompt, target)."""
    payload = json.dumps([bucket, prompt, target], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def split_for_hash(digest: str, probe_tenths: int = 1) -> str:
    """``probe_tenths`` in ten examples are probes (1 for task data; the alignment suite
    holds out more, so that its gate has enough probes)."""
    return "probe" if int(digest[:8], 16) % PROBE_MODULUS < probe_tenths else "train"


def examples_format(formats: Iterable[str], wanted: str | None) -> str:
    """The one format of a batch's examples (``wanted`` when given), or an
    :class:`IngestError`."""
    formats = set(formats)
    if len(formats) > 1:
        raise IngestError(
            "examples mix chat ({messages}) and completion ({prompt, target}) examples; "
            "a bucket holds one format"
        )
    found = formats.pop() if formats else (wanted or "completion")
    if wanted is not None and wanted != found:
        shape = "{messages}" if wanted == "chat" else "{prompt, target}"
        raise IngestError(f"format {wanted!r} takes {shape} examples, got {found} examples")
    return found


def validate_bucket_spec(name: str, kind: str | None, grader: str | None) -> None:
    if not BUCKET_NAME_RE.match(name):
        raise IngestError(
            f"bucket name {name!r} is invalid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if kind is not None and kind not in BUCKET_KINDS:
        raise IngestError(f"unknown bucket kind {kind!r}; expected one of {list(BUCKET_KINDS)}")
    if grader is not None and grader not in GRADERS:
        raise IngestError(f"unknown grader {grader!r}; expected one of {sorted(GRADERS)}")


def validate_examples(examples: Sequence[NewExample], limits: IngestLimits) -> None:
    if not examples:
        raise IngestError("examples: at least one example is required")
    if len(examples) > limits.max_examples:
        raise IngestError(
            f"examples: {len(examples)} examples in one request, the limit is "
            f"{limits.max_examples}",
            status=413,
        )
    for i, ex in enumerate(examples):
        # A chat example's prompt is its turns before the last, rendered by the template.
        prompt = "prompt" if ex.messages is None else "messages (rendered, before the last turn)"
        target = "target" if ex.messages is None else "messages (the last turn)"
        for field, value, limit in (
            (prompt, ex.prompt, limits.max_prompt_chars),
            (target, ex.target, limits.max_target_chars),
        ):
            if not value:
                raise IngestError(f"examples[{i}].{field} must not be empty")
            if len(value) > limit:
                raise IngestError(
                    f"examples[{i}].{field} has {len(value)} characters, the limit is {limit}"
                )
        total = len(ex.prompt) + len(ex.target)
        if limits.max_example_chars is not None and total > limits.max_example_chars:
            raise IngestError(
                f"examples[{i}]: prompt and target together have {total} characters; "
                f"{limits.model} takes at most {limits.max_example_chars}"
            )


def _insert(conn: Connection, table: type[Bucket] | type[Example]) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def get_or_create_bucket(
    conn: Connection, name: str, kind: str | None, grader: str | None, format: str | None = None
) -> Bucket:
    """Return the bucket row, creating it (race-free) with the given or default settings.

    An existing bucket keeps its kind, grader and format; asking for others is a conflict.
    """
    query = select(Bucket.__table__).where(Bucket.name == name)
    row = conn.execute(query).first()
    if row is None:  # look first: a conflicting insert would burn a sequence value
        conn.execute(
            _insert(conn, Bucket)
            .values(
                name=name,
                kind=kind or "task",
                grader=grader or "exact",
                format=format or "completion",
                status="active",
            )
            .on_conflict_do_nothing(index_elements=["name"])
        )
        row = conn.execute(query).one()
    bucket = Bucket(
        id=row.id, name=row.name, kind=row.kind, grader=row.grader, format=row.format,
        status=row.status,
    )  # fmt: skip
    for field, wanted in (("kind", kind), ("grader", grader), ("format", format)):
        have = getattr(bucket, field)
        if wanted is not None and wanted != have:
            raise IngestError(
                f"bucket {name!r} already exists with {field} {have!r}, not {wanted!r}",
                status=409,
            )
    return bucket


def ingest_batch(
    conn: Connection,
    bucket_name: str,
    examples: Sequence[NewExample],
    *,
    kind: str | None = None,
    grader: str | None = None,
    format: str | None = None,
    client: str | None = None,
    limits: IngestLimits = IngestLimits(),
    probe_tenths: int = 1,
) -> IngestResult:
    """Validate and store one batch inside the caller's transaction.

    Raises :class:`IngestError` before writing anything when the input is bad; the caller
    rolls the transaction back on any exception, so a batch is all or nothing.
    """
    validate_bucket_spec(bucket_name, kind, grader)
    validate_examples(examples, limits)
    fmt = examples_format([ex.format for ex in examples], format)
    bucket = get_or_create_bucket(conn, bucket_name, kind, grader, fmt)

    rows: dict[str, NewExample] = {}
    for ex in examples:
        rows.setdefault(ex.content_hash(bucket_name), ex)
    for digest in known_hashes(conn, bucket.id, list(rows)):
        del rows[digest]
    inserted = 0
    if rows:
        # Insert in hash order: concurrent batches that share examples then take the unique
        # index's entries in the same order, so on PostgreSQL one waits for the other
        # instead of the two deadlocking (which failed one of them with a 500).
        ordered = sorted(rows.items())
        insert = _insert_postgresql if conn.dialect.name == "postgresql" else _insert_generic
        splits = [split_for_hash(digest, probe_tenths) for digest, _ in ordered]
        inserted = insert(conn, _NewRows(bucket.id, client, ordered, splits))
    return IngestResult(bucket=bucket_name, accepted=inserted, duplicates=len(examples) - inserted)


def known_hashes(conn: Connection, bucket_id: int, hashes: Sequence[str]) -> set[str]:
    """The ``hashes`` that the bucket already stores.

    The list travels as one parameter (an array on PostgreSQL, a JSON array read with
    ``json_each`` on SQLite): the statement text stays short and constant whatever the
    batch size, so it is parsed and prepared once (see :func:`_insert_postgresql`).
    """
    if not hashes:
        return set()
    condition: ColumnElement[bool]
    if conn.dialect.name == "postgresql":
        listed = any_(bindparam("hashes", list(hashes), type_=ARRAY(Text)))
        condition = Example.content_hash == listed
    else:
        each = func.json_each(bindparam("hashes", json.dumps(list(hashes)))).table_valued("value")
        condition = Example.content_hash.in_(select(each.c.value))
    query = select(Example.content_hash).where(Example.bucket_id == bucket_id, condition)
    return set(conn.execute(query).scalars())


_PG_COLUMNS = ("prompt", "target", "split", "content_hash", "external_id", "messages")


@dataclass(frozen=True)
class _NewRows:
    """What one batch inserts (by either of the two inserts below): the new examples of one
    bucket, each with its content hash and split, on behalf of one client."""

    bucket_id: int
    client: str | None
    rows: list[tuple[str, NewExample]]  # (content hash, example), in hash order
    splits: list[str]  # of each row


def _insert_generic(conn: Connection, new: _NewRows) -> int:
    """Multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING id``; the number inserted."""
    stmt = (
        _insert(conn, Example)
        .on_conflict_do_nothing(index_elements=["bucket_id", "content_hash"])
        .returning(Example.id)
    )
    params = [
        {
            "bucket_id": new.bucket_id,
            "prompt": ex.prompt,
            "target": ex.target,
            "split": split,
            "content_hash": digest,
            "external_id": ex.external_id,
            "messages": ex.messages,
            "client": new.client,
        }
        for (digest, ex), split in zip(new.rows, new.splits, strict=True)
    ]
    return len(conn.execute(stmt, params).all())


def _insert_postgresql(conn: Connection, new: _NewRows) -> int:
    """The same insert as one statement over ``unnest`` of six arrays.

    A VALUES list of 1,000 rows has 8,000 placeholders, and psycopg parses such a long
    query in Python on every call (it caches only short ones); with arrays the query text
    is short and constant, which more than doubles the rate of a 1,000-example batch.
    """
    source = (
        func.unnest(*(bindparam(c, type_=ARRAY(Text)) for c in _PG_COLUMNS))
        .table_valued(*_PG_COLUMNS)
        .render_derived()
    )
    select_rows = (
        select(
            literal(new.bucket_id, Integer),
            *(source.c[c] for c in _PG_COLUMNS),
            literal(new.client, String),
        )
        .select_from(source)
        .order_by(source.c.content_hash)  # the lock order (see ingest_batch)
    )
    stmt = (
        postgresql.insert(Example)
        .from_select(["bucket_id", *_PG_COLUMNS, "client"], select_rows)
        .on_conflict_do_nothing(index_elements=["bucket_id", "content_hash"])
        .returning(Example.id)
    )
    params = {
        "prompt": [ex.prompt for _, ex in new.rows],
        "target": [ex.target for _, ex in new.rows],
        "split": new.splits,
        "content_hash": [digest for digest, _ in new.rows],
        "external_id": [ex.external_id for _, ex in new.rows],
        "messages": [ex.messages for _, ex in new.rows],
    }
    return len(conn.execute(stmt, params).all())
