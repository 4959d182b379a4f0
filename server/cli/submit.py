"""Sending checked examples to ``POST /v1/tasks``: grouped by bucket, in batches.

The API stores a batch all or nothing and names the first bad example of a refused batch
(``examples[i]...``), so a refusal maps back to a line of the file. With ``skip_bad`` that
line is set aside and the rest of its batch sent again; without it the submission stops.
A batch too large for the server (413) is split, down to the limit the server names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from server.cli.client import ApiClient, ApiError, CliError
from server.cli.examples_file import (
    Checked,
    Example,
    FileError,
    Rejection,
    detect_format,
    read_file,
)
from server.cli.options import Server, client_command
from server.cli.render import console, print_json, say, show, table, text

# "examples[3].prompt has 30 characters, ..." / "examples[3]: prompt and target ..."
_EXAMPLE_INDEX = re.compile(r"^examples\[(\d+)\]")
_EXAMPLE_PREFIX = re.compile(r"^examples\[\d+\](\.|:\s*)")
# "examples: 12 examples in one request, the limit is 5"
_COUNT_LIMIT = re.compile(r"examples in one request, the limit is (\d+)")


@dataclass(frozen=True)
class Group:
    """The lines of one bucket, with the kind and grader that any of them names."""

    bucket: str
    kind: str | None
    grader: str | None
    examples: list[Example]


@dataclass
class Summary:
    """What happened to every line of the file."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    by_bucket: dict[str, list[int]] = field(default_factory=dict)  # [accepted, duplicates]
    stopped: str | None = None  # why the submission stopped early, if it did
    unsent: int = 0  # lines not sent because it stopped

    def count(self, bucket: str, accepted: int, duplicates: int) -> None:
        self.accepted += accepted
        self.duplicates += duplicates
        row = self.by_bucket.setdefault(bucket, [0, 0])
        row[0] += accepted
        row[1] += duplicates

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [{"line": r.line, "reason": r.reason} for r in self.rejected],
            "buckets": {
                b: {"accepted": a, "duplicates": d} for b, (a, d) in self.by_bucket.items()
            },
            "stopped": self.stopped,
            "unsent": self.unsent,
        }


class StopSubmission(CliError):
    """The server refused a batch and ``--skip-bad`` was not given."""


def group_by_bucket(examples: list[Example]) -> list[Group]:
    """Buckets in the order they first appear; lines keep their order within a bucket."""
    groups: dict[str, list[Example]] = {}
    for example in examples:
        groups.setdefault(example.bucket, []).append(example)
    return [
        Group(
            bucket,
            next((e.kind for e in rows if e.kind is not None), None),
            next((e.grader for e in rows if e.grader is not None), None),
            rows,
        )
        for bucket, rows in groups.items()
    ]


def check_existing_buckets(client: ApiClient, checked: Checked) -> None:
    """Refuse, before anything is sent, the lines of a bucket that exists on the server with
    another kind or grader (the API would answer 409 for its batches)."""
    existing = {b["name"]: b for b in client.get("/v1/buckets")}
    kept = []
    for example in checked.examples:
        problem = _conflict(existing.get(example.bucket), example)
        if problem:
            checked.rejected.append(Rejection(example.line, problem))
        else:
            kept.append(example)
    checked.examples = kept
    checked.rejected.sort(key=lambda r: r.line)


def _conflict(bucket: dict[str, Any] | None, example: Example) -> str | None:
    if bucket is None:
        return None
    for name in ("kind", "grader", "format"):
        wanted = getattr(example, name)
        if wanted is not None and wanted != bucket.get(name, wanted):
            return f"bucket {example.bucket!r} already exists with {name} {bucket.get(name)!r}"
    return None


class Submitter:
    """Sends groups in batches of at most ``batch_size`` lines; ``progress(n)`` is called
    as lines are settled (stored, found duplicate or refused)."""

    def __init__(
        self,
        client: ApiClient,
        batch_size: int,
        skip_bad: bool,
        progress: Callable[[int], None] = lambda _: None,
    ) -> None:
        self.client = client
        self.batch_size = batch_size
        self.skip_bad = skip_bad
        self.progress = progress
        self.summary = Summary()
        self.settled = 0

    def run(self, groups: list[Group]) -> Summary:
        """Submit every group. On a refusal without ``skip_bad``, or an error that is not
        about the data (a bad key, the server gone), stop and record why."""
        total = sum(len(g.examples) for g in groups)
        try:
            for group in groups:
                for batch in self._batches(group.examples):
                    self._send(group, batch)
        except CliError as exc:
            self.summary.stopped = str(exc)
            self.summary.unsent = total - self.settled
        self.summary.rejected.sort(key=lambda r: r.line)
        return self.summary

    def _advance(self, lines: int) -> None:
        self.settled += lines
        self.progress(lines)

    def _batches(self, examples: list[Example]) -> Iterator[list[Example]]:
        # Re-read batch_size each time: a 413 can lower it for the rest of the file.
        start = 0
        while start < len(examples):
            batch = examples[start : start + self.batch_size]
            start += len(batch)
            yield batch

    def _send(self, group: Group, batch: list[Example]) -> None:
        """Send ``batch``; refused lines are taken out (``skip_bad``) and the rest resent."""
        pending = list(batch)
        while pending:
            chunk = pending[: self.batch_size]
            try:
                result = self.client.post("/v1/tasks", _body(group, chunk))
            except ApiError as exc:
                pending = self._refused(exc, group, chunk) + pending[len(chunk) :]
                continue
            self.summary.count(group.bucket, result["accepted"], result["duplicates"])
            self._advance(len(chunk))
            pending = pending[len(chunk) :]

    def _refused(self, exc: ApiError, group: Group, chunk: list[Example]) -> list[Example]:
        """What of ``chunk`` to send again after the server refused it."""
        if exc.status == 413 and len(chunk) > 1:
            # The limit the server names (examples per request), else half: a body too big.
            limit = _COUNT_LIMIT.search(exc.message)
            size = int(limit.group(1)) if limit else 0
            self.batch_size = size if 0 < size < len(chunk) else len(chunk) // 2
            return chunk
        if exc.status not in (409, 413, 422):
            raise exc  # not about the data: a bad key, the server failing, ...
        bad = _refused_index(exc, chunk)
        if bad is None and len(chunk) == 1:
            bad = 0
        # A refusal that names no line (a bucket conflict, say) is about the whole batch.
        indices = [bad] if bad is not None else list(range(len(chunk)))
        # The line number replaces the server's index into the batch ("examples[3].prompt").
        message = _EXAMPLE_PREFIX.sub("", exc.message) if bad is not None else exc.message
        reason = f"refused by the server ({exc.status}): {message}"
        for i in indices:
            self.summary.rejected.append(Rejection(chunk[i].line, reason))
        self._advance(len(indices))
        if not self.skip_bad:
            lines = _lines([chunk[i] for i in indices])
            raise StopSubmission(f"the server refused {lines} (bucket {group.bucket!r})")
        return [e for i, e in enumerate(chunk) if i not in indices]


def _lines(examples: list[Example]) -> str:
    numbers = [e.line for e in examples]
    if len(numbers) == 1:
        return f"line {numbers[0]}"
    more = ", ..." if len(numbers) > 5 else ""
    return f"{len(numbers)} lines ({', '.join(map(str, numbers[:5]))}{more})"


def _refused_index(exc: ApiError, chunk: list[Example]) -> int | None:
    """The index of the example a 422 names, if it is one of ``chunk``."""
    if exc.status != 422:
        return None
    found = _EXAMPLE_INDEX.match(exc.message)
    if found is None:
        return None
    index = int(found.group(1))
    return index if index < len(chunk) else None


def _body(group: Group, chunk: list[Example]) -> dict[str, Any]:
    body: dict[str, Any] = {"bucket": group.bucket, "examples": [e.body() for e in chunk]}
    if group.kind is not None:
        body["kind"] = group.kind
    if group.grader is not None:
        body["grader"] = group.grader
    return body


# --- the command -------------------------------------------------------------------------

# A batch of up to --batch-size examples is stored in one answer: give it longer than a read.
PATIENT = Server(timeout=60.0)


@client_command
def submit(
    file: Annotated[
        Path,
        typer.Argument(
            help="JSON lines (.jsonl, .json) or CSV (.csv) with bucket, prompt, target and "
            "optionally id, kind, grader; '-' reads JSON lines from stdin.",
            allow_dash=True,
            show_default=False,
        ),
    ],
    bucket: Annotated[
        str | None, typer.Option("--bucket", "-b", help="Bucket of the lines that name none.")
    ] = None,
    fmt: Annotated[
        Literal["jsonl", "csv"] | None,
        typer.Option(
            "--format",
            help="The file's format (default: from its extension).",
        ),
    ] = None,
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad", help="Submit the good lines even if some are bad (they are listed)."
        ),
    ] = False,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            help="Examples per request (lowered to the server's limit when it is smaller).",
        ),
    ] = 500,
    server: Server = PATIENT,
) -> None:
    """Submit a file of examples, grouped by bucket, in batches.

    Every line is checked first (fields, types, JSON, bucket names, kinds, graders, and
    buckets that exist with another kind or grader). If any line is bad, nothing is
    submitted and the bad lines are listed with their line numbers, unless --skip-bad is
    given. Examples already stored count as duplicates, so submitting a file again is safe.
    """
    try:
        checked = read_file(file, detect_format(file, fmt), bucket)
    except FileError as exc:
        raise CliError(str(exc)) from None
    if not checked.examples and not checked.rejected:
        raise CliError(f"{file} holds no examples")
    as_json = server.as_json
    if checked.rejected and not skip_bad:
        _refuse_file(file, checked, as_json)  # before connecting: no server needed to see it
    with server.connect() as client:
        check_existing_buckets(client, checked)
        if (checked.rejected and not skip_bad) or not checked.examples:
            _refuse_file(file, checked, as_json)
        summary = _submit_checked(client, checked, batch_size, skip_bad, as_json)
    summary.rejected = sorted(checked.rejected + summary.rejected, key=lambda r: r.line)
    _report(file, summary, as_json)
    if summary.stopped:
        raise typer.Exit(1)


def _submit_checked(
    client: ApiClient, checked: Checked, batch_size: int, skip_bad: bool, quiet: bool
) -> Summary:
    groups = group_by_bucket(checked.examples)
    columns = (
        TextColumn("submitting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines"),
        TimeRemainingColumn(),
    )
    # On stderr, so that --json output stays clean; gone once done (the summary follows).
    with Progress(*columns, console=console(stderr=True), transient=True, disable=quiet) as bar:
        task = bar.add_task("submit", total=len(checked.examples))
        submitter = Submitter(client, batch_size, skip_bad, lambda n: bar.advance(task, n))
        return submitter.run(groups)


def _refuse_file(file: Path, checked: Checked, as_json: bool) -> None:
    """Nothing is sent: list the bad lines and exit with 1."""
    bad = len(checked.rejected)
    if as_json:
        print_json({**Summary(rejected=checked.rejected).to_dict(), "submitted": False})
    else:
        _show_rejected(checked.rejected)
        hint = "; fix them or pass --skip-bad" if checked.examples else ""
        say(f"{file}: nothing submitted: {bad} bad line(s){hint}", style="red", stderr=True)
    raise typer.Exit(1)


def _report(file: Path, summary: Summary, as_json: bool) -> None:
    if as_json:
        print_json({**summary.to_dict(), "submitted": True})
        return
    rows = [[b, a, d] for b, (a, d) in summary.by_bucket.items()]
    if rows:
        show(table(None, ["Bucket", "Accepted>", "Duplicates>"], rows))
    _show_rejected(summary.rejected)
    say(
        f"{file}: {summary.accepted} accepted, {summary.duplicates} duplicates, "
        f"{len(summary.rejected)} rejected"
    )
    if summary.stopped:
        say(
            f"stopped: {summary.stopped}; {summary.unsent} line(s) not sent. The batches "
            "before it were stored; submit the file again once it is fixed (stored examples "
            "count as duplicates).",
            style="red",
            stderr=True,
        )


def _show_rejected(rejected: list[Rejection]) -> None:
    if rejected:
        rows = [[r.line, text(r.reason)] for r in rejected]
        show(table("Rejected lines", ["Line>", "Reason"], rows))
