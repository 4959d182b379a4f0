"""The dashboard at ``/`` in headless Chromium (Debian's, driven by Playwright for Python).

A real server (``lifelong serve --no-learner`` on SQLite) gets tasks through
``POST /v1/tasks``; adapter versions with real LoRA weights, their probe answers, teacher
rounds and a learner status are written with the same store and registry functions the
learner uses, and one version is promoted through the API. The page must then show the
buckets, the decisions (a reason holding markup stays text), the versions with their gate
verdicts, the accuracy plot and heat map and the learner's state; with a read key a
rollback is refused with the server's message, with the admin key it goes through and the
history shows it, on the page and in the API. The screenshot lands in the test's
directory (``LIFELONG_UPDATE_SCREENSHOT=1`` also copies it to ``docs/dashboard.png``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import REPO_ROOT, submit
from sqlalchemy import Engine, select

from learner.builtin.families import make_examples
from learner.model import registry
from learner.store import lease
from learner.store.db import make_engine, write_transaction
from learner.store.difficulty import replace_item_fit
from learner.store.evaluations import record_results
from learner.store.models import Bucket, Example
from learner.store.teacher import DecisionRecord, record_decision, save_snapshot

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 20_000
# family -> probe accuracy of (base, v1, v2, v3): v2 learns, v3 forgets (and is rejected).
BUCKETS = {
    "copy-l1": (0.25, 0.5, 0.75, 0.25),
    "reverse-l2": (0.0, 0.25, 0.5, 0.5),
    "addition-l1": (0.5, 0.5, 0.75, 0.0),
}
HOSTILE_REASON = '<img src=x id="injected"> chose <b>copy-l1</b> & "more"'
PASS = {"verdict": "promote", "summary": "promoted: +0.12 mean accuracy, no bucket forgot"}
REJECT = {
    "verdict": "reject",
    "summary": "rejected: addition-l1 forgot 0.75 of its probes (max 0.05)",
    "failures": ["addition-l1 forgot 0.75 of its probes (max 0.05)"],
}


@pytest.fixture(scope="session")
def lora_dir(base_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real (freshly initialised) LoRA weights for the tiny base model, so that the server
    can load every version it is asked to serve."""
    import torch
    from peft import LoraConfig, get_peft_model

    from learner.model.loading import load_base

    base, _ = load_base(Path(base_model), torch.device("cpu"))
    lora = LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", task_type="CAUSAL_LM")
    path = tmp_path_factory.mktemp("dashboard-lora") / "adapter"
    get_peft_model(base, lora).save_pretrained(str(path))
    return path


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Debian Chromium (``make test`` installs it)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run 'make test' or 'apt-get install chromium'")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


# --- data, written as the service writes it --------------------------------------------------


def submit_tasks(server: Any) -> None:
    with server.client("submit") as http:
        for name in BUCKETS:
            family, level = name.rsplit("-l", 1)
            examples = make_examples(family, 60, level=int(level), seed=3)
            submit(http, name, examples)


def probes_by_bucket(engine: Engine) -> dict[str, tuple[int, list[int]]]:
    """Bucket name -> (id, its probe example ids)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Bucket.name, Bucket.id, Example.id)
            .join(Example, Example.bucket_id == Bucket.id)
            .where(Example.split == "probe")
            .order_by(Example.id)
        ).all()
    found: dict[str, tuple[int, list[int]]] = {}
    for name, bucket_id, example_id in rows:
        found.setdefault(name, (bucket_id, []))[1].append(example_id)
    assert set(found) == set(BUCKETS) and all(len(ids) >= 2 for _, ids in found.values())
    return found


def add_version(
    engine: Engine,
    data_dir: Path,
    lora: Path,
    parent: int | None,
    step: int,
    status: str,
    report: dict[str, Any],
) -> int:
    """A version as the learner makes one: reserved, files written, completed, gated."""
    with write_transaction(engine) as conn:
        version = registry.reserve_version(conn, parent, "builtin:micro", step)
    path = data_dir / registry.version_relpath(version)
    shutil.copytree(lora, path)
    provenance = {"base_model": "builtin:micro", "version": version, "parent_version": parent}
    weights = registry.sha256_file(path / registry.ADAPTER_WEIGHTS)
    with write_transaction(engine) as conn:
        registry.complete_version(conn, version, weights, provenance)
        registry.set_status(conn, version, status, report)
    return version


def record_answers(engine: Engine, probes: dict[str, tuple[int, list[int]]]) -> None:
    """Every model's probe answers: the fraction right given in ``BUCKETS``."""
    models: tuple[int | None, ...] = (None, 1, 2, 3)
    with write_transaction(engine) as conn:
        for name, accuracies in BUCKETS.items():
            bucket_id, ids = probes[name]
            for model, accuracy, step in zip(models, accuracies, (0, 100, 200, 300), strict=True):
                right = round(accuracy * len(ids))
                answers = [(eid, i < right, "answer") for i, eid in enumerate(ids)]
                record_results(conn, model, bucket_id, answers, step)


def record_difficulty(engine: Engine) -> None:
    """An IRT fit of every example: difficulty grows in the order of ``BUCKETS``."""
    level = {name: i - 1.0 for i, name in enumerate(BUCKETS)}
    with write_transaction(engine) as conn:
        rows = conn.execute(select(Example.id, Bucket.name).join(Bucket).order_by(Example.id)).all()
        b = np.array([level[name] for _, name in rows])
        ids = np.array([example_id for example_id, _ in rows])
        replace_item_fit(conn, ids, b, np.full(len(b), 0.3), None, "1pl")


def record_teacher(engine: Engine, probes: dict[str, tuple[int, list[int]]]) -> None:
    """Four finished rounds (one with a reason full of markup) and a snapshot."""
    rounds = [
        (0, "copy-l1", "warm-up: every bucket once, copy-l1 first", 0.25),
        (50, "reverse-l2", "reverse-l2 has the highest learning progress (0.21)", 0.25),
        (100, "copy-l1", HOSTILE_REASON, 0.5),
        (150, "addition-l1", "addition-l1 is closest to the zone of proximal development", 0.75),
    ]
    with write_transaction(engine) as conn:
        for step, bucket, reason, accuracy in rounds:
            scores = {name: (0.3 if name == bucket else 0.1) for name in BUCKETS}
            record = DecisionRecord(
                step, probes[bucket][0], "lp_zpd", scores, reason, 50, accuracy, 1.5, 0.05
            )
            record_decision(conn, record)
        state = {
            "learner_ability": 0.4,
            "learner_ability_se": 0.2,
            "round": {"bucket": "addition-l1", "start_step": 200, "steps": 12},
            "bucket_difficulty": {"copy-l1": -1.0, "reverse-l2": 0.8, "addition-l1": 0.1},
        }
        save_snapshot(conn, 212, "lp_zpd", state, keep=5)


def report_learner(engine: Engine) -> None:
    """The status a running learner keeps in its lease row."""
    assert lease.try_acquire(engine, "test-learner@host", ttl=600)
    status = {
        "step": 212,
        "paused": False,
        "tokens_per_second": 1234.5,
        "last_loss": 0.4321,
        "examples_seen": 3392,
        "train_examples": 160,
        "buckets": 3,
        "device": "cpu",
        "teacher": {"policy": "lp_zpd", "focus": "addition-l1", "resting": None},
    }
    assert lease.heartbeat(engine, "test-learner@host", status)


def seed(server: Any, lora: Path) -> None:
    """Buckets, three versions (v3 rejected), evaluations, teacher rounds and a learner;
    v1 promoted by the learner, then v2 by an operator through the API."""
    submit_tasks(server)
    engine = make_engine(server.database_url)
    try:
        probes = probes_by_bucket(engine)
        one = add_version(engine, server.data_dir, lora, None, 100, "promoted", PASS)
        two = add_version(engine, server.data_dir, lora, one, 200, "candidate", PASS)
        add_version(engine, server.data_dir, lora, two, 300, "rejected", REJECT)
        record_answers(engine, probes)
        record_difficulty(engine)
        record_teacher(engine, probes)
        report_learner(engine)
        with write_transaction(engine) as conn:
            registry.promote(conn, one, "learner", "passed the gate")
    finally:
        engine.dispose()
    with server.client("admin") as http:
        response = http.post(f"/v1/adapters/{two}/promote", json={"reason": "operator: v2"})
        assert response.status_code == 200, response.text


# --- the page -----------------------------------------------------------------------------


def use_key(page: Any, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#key-save")


def check_content(page: Any, expect: Any) -> None:
    """Buckets, decisions, versions, plot, heat map and learner state are on the page."""
    buckets = page.locator("#buckets-table tbody tr")
    expect(buckets).to_have_count(len(BUCKETS))
    for name in BUCKETS:
        expect(page.locator("#buckets-table")).to_contain_text(name)
    expect(page.locator("#decisions-table tbody tr.decision")).to_have_count(4)
    # The reason's markup is shown as text and made no element.
    expect(page.locator("#decisions-table")).to_contain_text(HOSTILE_REASON)
    assert page.locator("#injected").count() == 0
    assert page.locator("#decisions-table b, #decisions-table img").count() == 0
    versions = page.locator("#versions-table tbody tr.version")
    expect(versions).to_have_count(3)
    expect(page.locator("#versions-table tr.active")).to_contain_text("v2")
    expect(page.locator("#versions-table")).to_contain_text(REJECT["summary"])
    lines = page.locator("#accuracy-plot svg polyline")
    expect(lines).to_have_count(len(BUCKETS))
    for i in range(len(BUCKETS)):
        assert len(lines.nth(i).get_attribute("points").split()) >= 4  # base, v1-v3 (+ rounds)
    expect(page.locator("#matrix-table tbody tr")).to_have_count(4)  # base, v1, v2, v3
    cell = page.locator("#matrix-table td.cell").first
    assert cell.evaluate("td => td.style.backgroundColor") != ""
    expect(page.locator("#learner-badge")).to_have_text("training")
    expect(page.locator("#learner-facts")).to_contain_text("1234.5")
    expect(page.locator("#buckets-table tbody tr").first).to_contain_text("-1.00")  # difficulty
    expect(page.locator("#active-model")).to_have_text("lifelong@2")


def open_page(browser: Any, url: str, problems: list[str]) -> Any:
    """A fresh tab on the dashboard that records script errors and accepts every confirm()."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(url)
    return page


def rollback_as_operator(page: Any, expect: Any, server: Any, problems: list[str]) -> None:
    """A read key's rollback is refused with the server's message; the admin key's works."""
    page.click("#rollback")
    expect(page.locator(".message.error")).to_contain_text("needs 'admin'")
    problems[:] = [p for p in problems if "403" not in p]  # the browser logs the refusal
    use_key(page, server.admin_key)
    page.click("#rollback")
    expect(page.locator(".message.ok").first).to_contain_text("rollback: v2 → v1")
    newest = page.locator("#history-table tbody tr").first
    expect(newest).to_contain_text("rollback")
    expect(newest).to_contain_text("v2 → v1")
    expect(page.locator("#active-model")).to_have_text("lifelong@1")
    expect(page.locator("#versions-table tr.active")).to_contain_text("v1")


def promote_again(page: Any, expect: Any) -> None:
    page.click('#versions-table button.promote[data-version="2"]')
    expect(page.locator(".message.ok").first).to_contain_text("promote: v1 → v2")
    expect(page.locator("#history-table tbody tr").first).to_contain_text("v1 → v2")
    expect(page.locator("#active-model")).to_have_text("lifelong@2")


def save_screenshot(page: Any, directory: Path) -> None:
    """Under the test's directory; ``LIFELONG_UPDATE_SCREENSHOT=1``: also the README's."""
    shot = directory / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("LIFELONG_UPDATE_SCREENSHOT"):
        (REPO_ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(shot, REPO_ROOT / "docs" / "dashboard.png")


def test_dashboard_shows_the_service_and_rolls_back(
    live_server: Any, lora_dir: Path, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    problems: list[str] = []
    page = open_page(browser, f"{live_server.url}/?refresh=1", problems)
    expect(page.locator("#refreshed")).to_contain_text("enter an API key")
    use_key(page, "not-a-key")  # refused: the page says so and stops polling with it
    expect(page.locator("#key-state")).to_contain_text("rejected")
    expect(page.locator("#refreshed")).to_contain_text("invalid or revoked API key")
    problems[:] = [p for p in problems if "401" not in p]
    use_key(page, live_server.keys["read"])
    expect(page.locator("#buckets-table td.empty")).to_contain_text("No buckets yet")
    expect(page.locator("#learner-badge")).to_have_text("offline")

    seed(live_server, lora_dir)  # shown by the next automatic refresh
    check_content(page, expect)
    rollback_as_operator(page, expect, live_server, problems)
    with live_server.client("read") as http:
        history = http.get("/v1/adapters/history").json()
        assert http.get("/v1/adapters/active").json()["version"] == 1
    assert [(e["action"], e["from_version"], e["to_version"]) for e in history] == [
        ("promote", None, 1),
        ("promote", 1, 2),
        ("rollback", 2, 1),
    ]
    assert history[-1]["reason"] == "rolled back from the dashboard"
    assert history[-1]["actor"] == "env-1"  # the admin key's name (first LIFELONG_API_KEYS)

    save_screenshot(page, tmp_path)
    promote_again(page, expect)
    page.click("#key-forget")  # the key leaves the tab, and what it read leaves the page
    expect(page.locator("#refreshed")).to_contain_text("enter an API key")
    expect(page.locator("#buckets-table tbody tr")).to_have_count(0)
    assert page.evaluate("sessionStorage.length") == 0
    assert problems == [], problems
