"""Reading and checking a file of examples for ``lifelong submit``.

A file is JSON lines (``.jsonl``, ``.json``, ``.ndjson``: one object per line) or CSV with a
header row; both hold ``bucket``, ``prompt``, ``target`` and optionally ``id``, ``kind``
and ``grader``. A JSON line may hold ``messages`` (a conversation in OpenAI's chat format,
the last turn the assistant's) instead of ``prompt`` and ``target``: a chat example.
Every line is checked here against the rules the API enforces whatever its configuration,
so that a bad file is refused before anything is sent. Length limits
depend on the server's settings and are left to it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from learner.evaluation.graders import GRADERS
from learner.model.chat import ROLES, check_conversation
from learner.store.ingest import BUCKET_NAME_RE
from learner.store.models import BUCKET_KINDS

Format = Literal["jsonl", "csv"]
REQUIRED = ("prompt", "target")
OPTIONAL = ("id", "kind", "grader")
FIELDS = ("bucket", *REQUIRED, *OPTIONAL)
CHAT_FIELDS = ("bucket", "messages", *OPTIONAL)  # a chat example's line (JSON lines only)
MAX_ID_CHARS = 128  # the API's limit on a client id (server.api.schemas.ExampleIn)
EXTENSIONS: dict[str, Format] = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
EXTENSIONS[".csv"] = "csv"


class FileError(ValueError):
    """The file as a whole cannot be read (unknown format, bad CSV header, ...)."""


@dataclass(frozen=True)
class Example:
    """One valid line."""

    line: int
    bucket: str
    prompt: str | None
    target: str | None
    id: str | None = None
    kind: str | None = None
    grader: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content) of a chat example

    @property
    def format(self) -> str:
        return "completion" if self.messages is None else "chat"

    def body(self) -> dict[str, Any]:
        """The example as ``POST /v1/tasks`` takes it."""
        out: dict[str, Any]
        if self.messages is not None:
            out = {"messages": [{"role": r, "content": c} for r, c in self.messages]}
        else:
            out = {"prompt": self.prompt, "target": self.target}
        if self.id is not None:
            out["id"] = self.id
        return out


@dataclass(frozen=True)
class Rejection:
    """A line that is not submitted, and why."""

    line: int
    reason: str


@dataclass
class Checked:
    """A file's valid lines and rejected ones, in file order."""

    examples: list[Example] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def detect_format(path: Path, given: str | None) -> Format:
    """``given`` (jsonl or csv), else the format the file's extension names."""
    if given:
        if given not in ("jsonl", "csv"):
            raise FileError(f"unknown format {given!r}; use jsonl or csv")
        return "csv" if given == "csv" else "jsonl"
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        if str(path) == "-":
            return "jsonl"
        raise FileError(
            f"cannot tell the format of {path} from its extension; name it .jsonl or .csv, "
            "or pass --format jsonl|csv"
        )
    return found


def read_file(path: Path, fmt: Format, default_bucket: str | None = None) -> Checked:
    """Read and check every line of ``path`` (``-``: standard input)."""
    data = _read_bytes(path)
    rows = _jsonl_rows(data) if fmt == "jsonl" else _csv_rows(data)
    return check_rows(rows, default_bucket)


def _read_bytes(path: Path) -> bytes:
    if str(path) == "-":
        import sys

        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror or exc}") from None


# A row is (line number, fields) or (line number, reason it cannot be read).
Row = tuple[int, Mapping[str, Any] | str]


def _jsonl_rows(data: bytes) -> Iterator[Row]:
    for number, raw in enumerate(data.splitlines(), start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark, as some editors write
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, f"not valid UTF-8 (byte {exc.start + 1})"
            continue
        yield number, _json_object(text, first=number == 1)


def _json_object(text: str, first: bool) -> Mapping[str, Any] | str:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if first and text.lstrip().startswith("["):
            hint = " (the file looks like a JSON array; write one object per line instead)"
        return f"bad JSON: {exc.msg} at column {exc.colno}{hint}"
    if not isinstance(value, dict):
        return f"not a JSON object but {_type_name(value)}"
    return value


def _csv_rows(data: bytes) -> Iterator[Row]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FileError(f"line {line} is not valid UTF-8 (the whole CSV file must be)") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    start = 1
    for cells in reader:
        # A quoted field can span lines: a record's number is the line where it starts.
        number, start = start, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue  # a blank line
        if header is None:
            header = _check_header(cells)
            continue
        yield number, _csv_record(header, cells)


def _check_header(cells: list[str]) -> list[str]:
    names = [c.strip() for c in cells]
    unknown = [n for n in names if n not in FIELDS]
    if unknown:
        raise FileError(
            f"CSV header has unknown column(s) {', '.join(map(repr, unknown))}; "
            f"the columns are {', '.join(FIELDS)}"
        )
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise FileError(f"CSV header names column(s) {', '.join(duplicated)} twice")
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise FileError(f"CSV header lacks the column(s) {', '.join(missing)}")
    return names


def _csv_record(header: list[str], cells: list[str]) -> Mapping[str, Any] | str:
    if len(cells) != len(header):
        return f"has {len(cells)} fields, the header has {len(header)}"
    # An empty optional cell (or bucket, which --bucket may fill) means "not given"; empty
    # prompts and targets are refused by the checks.
    return {
        name: value
        for name, value in zip(header, cells, strict=True)
        if value != "" or name in REQUIRED
    }


def check_rows(rows: Iterable[Row], default_bucket: str | None = None) -> Checked:
    """Check each row; lines of one bucket must agree on its kind and grader."""
    out = Checked()
    specs: dict[str, dict[str, tuple[str, int]]] = {}  # bucket -> field -> (value, line)
    for number, row in rows:
        if isinstance(row, str):
            out.rejected.append(Rejection(number, row))
            continue
        result = check_fields(number, row, default_bucket)
        if isinstance(result, str):
            out.rejected.append(Rejection(number, result))
            continue
        conflict = _spec_conflict(specs.setdefault(result.bucket, {}), result)
        if conflict:
            out.rejected.append(Rejection(number, conflict))
        else:
            out.examples.append(result)
    return out


def _spec_conflict(seen: dict[str, tuple[str, int]], example: Example) -> str | None:
    """A bucket has one kind, grader and format: the first line that names one sets it."""
    for name in ("kind", "grader", "format"):
        value = getattr(example, name)
        if value is None:
            continue
        first = seen.setdefault(name, (value, example.line))
        if first[0] != value:
            return (
                f"{name} {value!r} for bucket {example.bucket!r}, but line {first[1]} gives "
                f"it {name} {first[0]!r}"
            )
    return None


def check_fields(number: int, row: Mapping[str, Any], default_bucket: str | None) -> Example | str:
    """The line as an :class:`Example`, or the reason it is refused."""
    chat = "messages" in row
    fields = CHAT_FIELDS if chat else FIELDS
    unknown = [k for k in row if k not in fields]
    if unknown:
        also = " (a chat line has messages instead of prompt and target)" if chat else ""
        return (
            f"unknown field(s) {', '.join(map(repr, unknown))}; the fields are "
            + ", ".join(fields)
            + also
        )
    messages = _check_messages(row["messages"]) if chat else None
    if isinstance(messages, str):
        return messages
    values: dict[str, str | None] = {}
    for name in (f for f in fields if f != "messages"):
        value = row.get(name)
        present = name in row
        if name == "bucket" and value is None:
            # The file's bucket wins; --bucket fills it in where a line has none.
            value, present = default_bucket, False
        problem = _check_value(name, value, present)
        if problem:
            return problem
        values[name] = value
    return Example(
        line=number,
        bucket=str(values["bucket"]),
        prompt=values.get("prompt"),
        target=values.get("target"),
        id=values["id"],
        kind=values["kind"],
        grader=values["grader"],
        messages=messages,
    )


def _check_messages(value: Any) -> tuple[tuple[str, str], ...] | str:
    """A chat line's turns, or why they are refused (the API's rules, checked here first)."""
    if not isinstance(value, list):
        return f"'messages' must be an array of turns, not {_type_name(value)}"
    turns: list[dict[str, str]] = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            return f"messages[{i}] must be an object with exactly 'role' and 'content'"
        role, content = turn["role"], turn["content"]
        if role not in ROLES:
            return f"messages[{i}].role {role!r} is not one of {', '.join(ROLES)}"
        if not isinstance(content, str):
            return f"messages[{i}].content must be a string, not {_type_name(content)}"
        if problem := _text_problem(content):
            return f"messages[{i}].content {problem}"
        turns.append({"role": role, "content": content})
    if (problem := check_conversation(turns)) is not None:
        return f"'messages': {problem}"
    return tuple((t["role"], t["content"]) for t in turns)


def _check_value(name: str, value: Any, present: bool) -> str | None:
    required = name in REQUIRED or name == "bucket"
    if value is None:
        if not required:
            return None
        if present:
            return f"{name!r} must be a string, not null"
        hint = " (or pass --bucket)" if name == "bucket" else ""
        return f"missing field {name!r}{hint}"
    if not isinstance(value, str):
        return f"{name!r} must be a string, not {_type_name(value)}"
    problem = _text_problem(value)
    if problem:
        return f"{name!r} {problem}"
    if required and not value:
        return f"{name!r} is empty"
    return _rule_problem(name, value)


def _rule_problem(name: str, value: str) -> str | None:
    if name == "bucket" and not BUCKET_NAME_RE.match(value):
        return (
            f"bucket name {value!r} is invalid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if name == "id" and len(value) > MAX_ID_CHARS:
        return f"'id' has {len(value)} characters, the limit is {MAX_ID_CHARS}"
    if name == "kind" and value not in BUCKET_KINDS:
        return f"unknown kind {value!r}; expected one of {', '.join(BUCKET_KINDS)}"
    if name == "grader" and value not in GRADERS:
        return f"unknown grader {value!r}; expected one of {', '.join(sorted(GRADERS))}"
    return None


def _text_problem(value: str) -> str | None:
    """What the database cannot store: NUL characters, lone surrogates (JSON allows both)."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate (U+{ord(value[exc.start]):04X}); not valid Unicode"
    return None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
