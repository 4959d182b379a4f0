"""``lifelong adapters``, ``eval``, ``buckets``, ``teacher`` and ``status`` against a
running server, with versions written into its data directory as the learner writes them."""

from __future__ import annotations

import json
from typing import Any

from cli_support import WIDTH, describe, invoke, rows_of, run_ok, table_rows, widest_line
from sqlalchemy import Engine, select

from learner.store import lease
from learner.store.db import write_transaction
from learner.store.evaluations import record_results
from learner.store.ingest import NewExample, ingest_batch
from learner.store.models import Bucket, Example
from learner.store.teacher import DecisionRecord, record_decision, save_snapshot

ADMIN = "env-1"  # the admin test key's name (first in LIFELONG_API_KEYS)
LONG_REASON = "the copy buckets lost " + "a great many probes " * 8 + "(max 0.05)"
REJECTED = {
    "verdict": "reject",
    "summary": "rejected: copy-l1 forgot 0.20 of its probes (max 0.05)",
    "checks": [
        {
            "kind": "forgetting",
            "name": "copy-l1",
            "passed": False,
            "value": 0.2,
            "threshold": 0.05,
            "message": LONG_REASON,
        },
        {
            "kind": "gain",
            "name": "trained",
            "passed": True,
            "value": 0.1,
            "threshold": 0.0,
            "message": "mean gain +0.10",
        },
    ],
}


def test_list_show_promote_rollback_history(live_api: Any, adapters: Any) -> None:
    first, second = adapters.add(), adapters.add(parent=1)
    rejected = adapters.add(status="rejected", parent=2, gate_report=REJECTED)

    listed = run_ok(live_api, "adapters", "list", scope="read")
    assert [r[2] for r in rows_of(listed.stdout, f"v{rejected}")] == ["rejected"]
    assert rows_of(listed.stdout, f"v{first}")[0][-1] == "not gated yet"
    assert json.loads(run_ok(live_api, "adapters", "list", "--json").stdout)[0]["version"] == 1

    shown = run_ok(live_api, "adapters", "show", str(rejected), scope="read")
    assert "rejected: copy-l1 forgot 0.20" in shown.stdout
    assert rows_of(shown.stdout, "forgetting: copy-l1")[0][1:4] == ["FAIL", "0.200", "0.050"]
    assert "(max 0.05)" in shown.stdout  # the long reason folded, not cut
    assert widest_line(listed.stdout + shown.stdout) <= WIDTH

    promoted = run_ok(live_api, "adapters", "promote", str(first), "--reason", "looks good")
    assert f"promote: base -> v{first} by {ADMIN}: looks good" in promoted.stdout
    run_ok(live_api, "adapters", "promote", str(second))
    refused = invoke(live_api, "adapters", "promote", str(rejected))
    assert refused.exit_code == 1, describe(refused)
    assert f"v{rejected} failed the gate" in refused.stderr and "(409)" in refused.stderr
    denied = invoke(live_api, "adapters", "promote", str(rejected), "--force", scope="read")
    assert denied.exit_code == 1 and "(403)" in denied.stderr
    missing = invoke(live_api, "adapters", "show", "42")
    assert missing.exit_code == 1 and "adapter version 42 does not exist" in missing.stderr

    back = run_ok(live_api, "adapters", "rollback", "--reason", "users complained", "--json")
    event = json.loads(back.stdout)
    assert (event["action"], event["from_version"], event["to_version"]) == ("rollback", 2, 1)
    run_ok(live_api, "adapters", "rollback", "--to", "0")
    nothing = invoke(live_api, "adapters", "rollback")
    assert nothing.exit_code == 1 and "nothing to roll back" in nothing.stderr

    history = run_ok(live_api, "adapters", "history", scope="read")
    changes = [(r[2], r[4]) for r in table_rows(history.stdout) if r[0].isdigit()]
    assert changes == [
        ("promote", "base -> v1"),
        ("promote", "v1 -> v2"),
        ("rollback", "v2 -> v1"),
        ("rollback", "v1 -> base"),
    ]
    assert "users complained" in history.stdout
    events = json.loads(run_ok(live_api, "adapters", "history", "--json").stdout)
    assert [e["reason"] for e in events][:3] == [
        "looks good",
        f"promoted by {ADMIN}",
        "users complained",
    ]


def _copy_probes(conn: Any) -> tuple[int, list[int]]:
    examples = [NewExample(f"copy {w} =", w) for w in ("ab", "cd", "ef", "gh")]
    ingest_batch(conn, "copy-l1", examples, kind="task", grader="exact", probe_tenths=10)
    bucket_id = conn.execute(select(Bucket.id).where(Bucket.name == "copy-l1")).scalar_one()
    ids = conn.execute(
        select(Example.id).where(Example.bucket_id == bucket_id).order_by(Example.id)
    ).scalars()
    return bucket_id, list(ids)


def _store_answers(engine: Engine, version: int | None, rights: list[bool]) -> None:
    with write_transaction(engine) as conn:
        bucket_id, probe_ids = _copy_probes(conn)
        answers = [(eid, right, "x") for eid, right in zip(probe_ids, rights, strict=True)]
        record_results(conn, version, bucket_id, answers, step=10)


def test_eval_shows_the_accuracy_matrix(live_api: Any, adapters: Any, engine: Engine) -> None:
    empty = run_ok(live_api, "eval", scope="read")
    assert "nothing evaluated yet" in empty.stdout
    first = adapters.add()
    _store_answers(engine, None, [True, False, False, False])
    _store_answers(engine, first, [True, True, True, False])
    adapters.promote(first)

    result = run_ok(live_api, "eval", scope="read")
    assert rows_of(result.stdout, "base")[0][1:3] == ["25.0%", "25.0%"]
    v1 = rows_of(result.stdout, f"v{first} (promoted) *")[0]
    assert v1[1:3] == ["75.0%", "75.0%"]
    assert "copy-l1" in result.stdout and "BWT" in result.stdout
    body = json.loads(run_ok(live_api, "eval", "--json").stdout)
    assert body["active_version"] == first and body["buckets"] == ["copy-l1"]

    shown = run_ok(live_api, "adapters", "show", str(first))
    assert rows_of(shown.stdout, "copy-l1")[0][1:] == ["75.0%", "4"]


def test_buckets_teacher_and_status(live_api: Any, engine: Engine) -> None:
    assert "no buckets yet" in run_ok(live_api, "buckets").stdout
    with write_transaction(engine) as conn:
        for name in ("hard", "easy"):
            ingest_batch(conn, name, [NewExample(f"{name} {i}", str(i)) for i in range(4)])
        ids = {name: id_ for name, id_ in conn.execute(select(Bucket.name, Bucket.id))}
        decision = DecisionRecord(
            0, ids["hard"], "lp_zpd", {"hard": 1.2, "easy": 1.1}, LONG_REASON, 10, 0.5, 2.0, 0.1
        )
        record_decision(conn, decision)
        state = {
            "round": {"bucket": "easy", "start_step": 10, "steps": 3},
            "quarantined": {"hard": "raised the refusal rate"},
            "learner_ability": 0.5,
            "learner_ability_se": 0.2,
        }
        save_snapshot(conn, 10, "lp_zpd", state, keep=5)

    listed = run_ok(live_api, "buckets", scope="read")
    [easy] = rows_of(listed.stdout, "easy")
    assert easy[1:3] == ["4", "0"] and easy[-1] == "focus"
    [hard] = rows_of(listed.stdout, "hard")
    assert hard[-3:] == ["100.0%", "1.200", "quarantined"]
    assert widest_line(listed.stdout) <= WIDTH
    names = {b["name"] for b in json.loads(run_ok(live_api, "buckets", "--json").stdout)}
    assert names == {"easy", "hard"}

    teacher = run_ok(live_api, "teacher", scope="read")
    assert "policy lp_zpd, step 10" in teacher.stdout and "0.50 ± 0.20" in teacher.stdout
    assert "quarantined: raised the refusal rate" in teacher.stdout
    [decision_row] = rows_of(teacher.stdout, "0")
    assert decision_row[1] == "hard" and decision_row[-1] == LONG_REASON  # folded, not cut
    assert widest_line(teacher.stdout) <= WIDTH
    assert json.loads(run_ok(live_api, "teacher", "--json").stdout)["policy"] == "lp_zpd"

    status = run_ok(live_api, "status", scope="read")
    assert "up, ready" in status.stdout and "serving: base" in status.stdout
    assert "no learner has run yet" in status.stdout
    assert lease.try_acquire(engine, "learner-test", ttl=60)
    lease.heartbeat(engine, "learner-test", {"step": 42, "tokens_per_second": 12.5})
    report = json.loads(run_ok(live_api, "status", "--json").stdout)
    assert report["ready"] and report["learner"]["holder"] == "learner-test"
    assert rows_of(run_ok(live_api, "status").stdout, "step")[0][1] == "42"

    down = invoke(live_api, "status", "--url", "http://127.0.0.1:9")
    assert down.exit_code == 1 and "cannot connect" in down.stderr
