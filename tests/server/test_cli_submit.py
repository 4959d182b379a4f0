"""``lifelong submit`` against a running server: JSON lines and CSV files, files with bad
lines (nothing submitted unless --skip-bad), lines the server refuses, and batching down to
the server's per-request limit (``TEST_LIMITS``: 5 examples, 20-character prompts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from cli_support import KEYS, WIDTH, describe, invoke, rows_of, run_ok, table_rows, widest_line

from server.cli.examples_file import read_file
from server.process.settings import LimitSettings


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """One line per row: dicts as JSON, strings as they are (for bad JSON)."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def good_rows(n: int, bucket: str = "add", start: int = 0) -> list[dict[str, Any]]:
    return [
        {"bucket": bucket, "prompt": f"{i}+{i}=?", "target": str(2 * i), "id": f"{bucket}-{i}"}
        for i in range(start, start + n)
    ]


def stored(server: Any, bucket: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {KEYS['read']}"}
    response = httpx.get(f"{server.url}/v1/buckets/{bucket}/examples", headers=headers)
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    examples: list[dict[str, Any]] = response.json()["examples"]
    return examples


def test_submit_jsonl_in_batches_and_again_as_duplicates(
    live_api: Any, api: Any, tmp_path: Path
) -> None:
    rows = good_rows(12) + good_rows(3, bucket="mul")
    rows[13].update(kind="task", grader="numeric")
    path = write_jsonl(tmp_path / "tasks.jsonl", rows)
    # 500 per batch is over the server's limit of 5: the CLI learns it from the 413.
    result = run_ok(live_api, "submit", path, scope="submit")
    assert "15 accepted, 0 duplicates, 0 rejected" in result.stdout
    assert api.count() == 15
    assert rows_of(result.stdout, "add")[0][1:] == ["12", "0"]
    assert {e["external_id"] for e in stored(live_api, "add")} == {f"add-{i}" for i in range(12)}
    buckets = {b["name"]: b for b in api_get(live_api, "/v1/buckets")}
    assert buckets["mul"]["grader"] == "numeric" and buckets["add"]["grader"] == "exact"

    again = run_ok(live_api, "submit", path, "--batch-size", "4", "--json", scope="submit")
    summary = json.loads(again.stdout)
    assert (summary["accepted"], summary["duplicates"], summary["rejected"]) == (0, 15, [])
    assert summary["buckets"]["add"] == {"accepted": 0, "duplicates": 12}
    assert api.count() == 15


def api_get(server: Any, path: str) -> Any:
    headers = {"Authorization": f"Bearer {KEYS['read']}"}
    return httpx.get(f"{server.url}{path}", headers=headers).json()


def test_submit_csv(live_api: Any, api: Any, tmp_path: Path) -> None:
    path = tmp_path / "tasks.csv"
    path.write_text(
        "bucket,prompt,target,id\n"
        "csv-a,1+1=?,2,a1\n"
        '"csv-a","say ""hi"", twice",hi hi,\n'
        "\n"
        ',"two\nlines",x,b1\n'  # no bucket: --bucket; a quoted field across two lines
        "csv-a,3+3=?,6,a3\n"
    )
    result = run_ok(live_api, "submit", path, "--bucket", "csv-b", scope="submit")
    assert "4 accepted, 0 duplicates, 0 rejected" in result.stdout
    a = stored(live_api, "csv-a")
    assert sorted((e["prompt"], e["target"], e["external_id"] or "") for e in a) == [
        ("1+1=?", "2", "a1"),
        ("3+3=?", "6", "a3"),
        ('say "hi", twice', "hi hi", ""),
    ]
    assert [e["prompt"] for e in stored(live_api, "csv-b")] == ["two\nlines"]
    assert api.count() == 4


BAD_FILE = [
    {"bucket": "good", "prompt": "1+1=?", "target": "2"},
    {"bucket": "good", "prompt": "2+2=?"},
    {"bucket": "good", "prompt": 7, "target": "7"},
    '{"bucket": "good", "prompt": "3+3=?", "target": "6"',
    {"bucket": "no spaces", "prompt": "4+4=?", "target": "8"},
    {"bucket": "good", "prompt": "5+5=?", "target": "10", "answer": "10"},
    {"bucket": "good", "prompt": "", "target": "0"},
    {"bucket": "good", "prompt": "6+6=?", "target": "12", "grader": "fuzzy"},
    {"bucket": "good", "prompt": "7+7=?", "target": "14"},
]
BAD_LINES = {
    2: "missing field 'target'",
    3: "'prompt' must be a string, not a number",
    4: "bad JSON",
    5: "bucket name 'no spaces' is invalid",
    6: "unknown field(s) 'answer'",
    7: "'prompt' is empty",
    8: "unknown grader 'fuzzy'",
}


def test_a_file_with_bad_lines_submits_nothing(live_api: Any, api: Any, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", BAD_FILE)
    result = invoke(live_api, "submit", path, scope="submit")
    assert result.exit_code == 1, describe(result)
    assert "nothing submitted: 7 bad line(s)" in result.stderr
    rejected = {int(r[0]): r[1] for r in table_rows(result.stdout) if r[0].isdigit()}
    assert set(rejected) == set(BAD_LINES), result.stdout
    for line, reason in BAD_LINES.items():
        assert reason in rejected[line], (line, rejected[line])
    assert api.count() == 0
    assert widest_line(result.stdout) <= WIDTH


def test_skip_bad_submits_the_good_lines(live_api: Any, api: Any, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", BAD_FILE)
    result = invoke(live_api, "submit", path, "--skip-bad", "--json", scope="submit")
    assert result.exit_code == 0, describe(result)
    summary = json.loads(result.stdout)
    assert summary["accepted"] == 2 and summary["submitted"] is True
    assert [r["line"] for r in summary["rejected"]] == sorted(BAD_LINES)
    assert sorted(e["prompt"] for e in stored(live_api, "good")) == ["1+1=?", "7+7=?"]


def test_lines_the_server_refuses(live_api: Any, api: Any, tmp_path: Path) -> None:
    """A prompt over the server's limit (20 characters here) passes the local checks; the
    server's refusal names the example, which the CLI maps back to its line."""
    rows = good_rows(7)
    rows[5]["prompt"] = "a prompt of more than twenty characters"
    path = write_jsonl(tmp_path / "long.jsonl", rows)

    stopped = invoke(live_api, "submit", path, "--batch-size", "3", scope="submit")
    assert stopped.exit_code == 1, describe(stopped)
    assert "the server refused line 6" in stopped.stderr
    assert "3 accepted" in stopped.stdout  # the first batch of 3 went in before line 6
    assert "line(s) not sent" in stopped.stderr

    skipped = invoke(live_api, "submit", path, "--skip-bad", "--json", scope="submit")
    assert skipped.exit_code == 0, describe(skipped)
    summary = json.loads(skipped.stdout)
    assert (summary["accepted"], summary["duplicates"]) == (3, 3)
    [refused] = summary["rejected"]
    assert refused["line"] == 6 and "refused by the server (422)" in refused["reason"]
    assert "the limit is 20" in refused["reason"]
    assert api.count() == 6


def test_buckets_that_exist_with_another_grader(live_api: Any, api: Any, tmp_path: Path) -> None:
    run_ok(live_api, "submit", write_jsonl(tmp_path / "a.jsonl", good_rows(2)), scope="submit")
    rows = [*good_rows(2, start=5), {**good_rows(1, start=9)[0], "grader": "numeric"}]
    result = invoke(live_api, "submit", write_jsonl(tmp_path / "b.jsonl", rows), scope="submit")
    assert result.exit_code == 1, describe(result)
    assert "already exists with grader 'exact'" in result.stdout
    assert api.count() == 2


def test_grader_conflicts_within_a_file(tmp_path: Path) -> None:
    rows = [
        {**r, "grader": g} for r, g in zip(good_rows(3), ("numeric", None, "exact"), strict=True)
    ]
    checked = read_file(write_jsonl(tmp_path / "c.jsonl", rows), "jsonl")
    assert [e.line for e in checked.examples] == [1, 2]
    [conflict] = checked.rejected
    assert conflict.line == 3 and "line 1 gives it grader 'numeric'" in conflict.reason


def test_line_numbers_count_blank_lines_and_csv_records(tmp_path: Path) -> None:
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text('\n{"bucket": "b", "prompt": "p", "target": "t"}\n\n[1]\n')
    checked = read_file(jsonl, "jsonl")
    assert [e.line for e in checked.examples] == [2]
    assert [(r.line, r.reason) for r in checked.rejected] == [(4, "not a JSON object but an array")]
    csv = tmp_path / "x.csv"
    csv.write_text('prompt,target\n"a\nb\nc",t\n\nonly-one-field\n')
    checked = read_file(csv, "csv", default_bucket="b")
    assert [e.line for e in checked.examples] == [2]
    assert [(r.line, r.reason) for r in checked.rejected] == [(6, "has 1 fields, the header has 2")]


def test_unreadable_files_and_unreachable_servers(live_api: Any, tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("bucket,question,target\nb,p,t\n")
    result = invoke(live_api, "submit", csv)
    assert result.exit_code == 1 and "unknown column(s) 'question'" in result.stderr
    other = tmp_path / "x.txt"
    other.write_text("{}\n")
    result = invoke(live_api, "submit", other)
    assert result.exit_code == 1 and "--format jsonl|csv" in result.stderr
    good = write_jsonl(tmp_path / "ok.jsonl", good_rows(1))
    result = invoke(live_api, "submit", good, "--url", "http://127.0.0.1:9")
    assert result.exit_code == 1
    assert "cannot connect to the lifelong server at http://127.0.0.1:9" in result.stderr
    result = invoke(live_api, "submit", good, scope=None, env={"LIFELONG_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1 and "no API key: set LIFELONG_API_KEY" in result.stderr
    result = invoke(live_api, "submit", good, scope="read")
    assert result.exit_code == 1 and "(403)" in result.stderr, describe(result)


def test_the_key_from_the_data_directory(live_api: Any, api: Any, tmp_path: Path) -> None:
    (live_api.data_dir / "admin.key").write_text(KEYS["admin"] + "\n")
    good = write_jsonl(tmp_path / "ok.jsonl", good_rows(2))
    run_ok(live_api, "submit", good, scope=None)
    assert api.count() == 2


def test_submit_from_stdin(live_api: Any, api: Any) -> None:
    lines = "\n".join(json.dumps(r) for r in good_rows(3, bucket="piped"))
    result = run_ok(live_api, "submit", "-", scope="submit", stdin=lines)
    assert "3 accepted" in result.stdout and api.count() == 3


def chat_row(bucket: str, user: str, answer: str) -> dict[str, Any]:
    turns = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"bucket": bucket, "messages": turns}


def test_submit_chat_jsonl(
    start_live_api: Any, api: Any, tmp_path: Path, chat_model_dir: Path
) -> None:
    server = start_live_api(
        base_model=str(chat_model_dir), preload_model=True, device="cpu", limits=LimitSettings()
    )
    rows: list[Any] = [chat_row("chatty", f"sort {w} =", "".join(sorted(w))) for w in
                       ("cba", "fed", "ihg")]  # fmt: skip
    rows.append({**chat_row("chatty", "q", "a"), "prompt": "x"})  # both shapes: refused here
    rows.append({"bucket": "chatty", "messages": [{"role": "user", "content": "no answer"}]})
    rows.append({"bucket": "chatty", "prompt": "p", "target": "t"})  # one format per bucket
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    checked = read_file(path, "jsonl")
    assert [e.line for e in checked.examples] == [1, 2, 3]
    reasons = {r.line: r.reason for r in checked.rejected}
    assert "unknown field(s) 'prompt'" in reasons[4]
    assert "at least two turns" in reasons[5]
    assert (
        "format 'completion' for bucket 'chatty', but line 1 gives it format 'chat'" in (reasons[6])
    )
    result = run_ok(server, "submit", path, "--skip-bad", scope="submit")
    assert "3 accepted, 0 duplicates, 3 rejected" in result.stdout, result.stdout
    examples = stored(server, "chatty")
    # Stored in hash order (the insert's lock order), not file order.
    assert sorted(e["messages"][0]["content"] for e in examples) == ["sort cba =", "sort fed =",
                                                                      "sort ihg ="]  # fmt: skip
    assert {e["target"] for e in examples} == {"abc", "def", "ghi"}
    assert all(e["prompt"].startswith("<|begin_of_text|>") for e in examples)
