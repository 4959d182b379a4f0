"""Bring your own model: a Hugging Face directory that is not builtin, with a chat template.

A real server and learner on a copy of the ``small`` weights that carries its own chat
template and nothing builtin (tests/chat_model.py: served as a plain local directory), so
the service treats it as a user's model: at first start the learner answers the general
alignment suite with it. A chat bucket (sort-l1 as conversations) is submitted after the
start; the learner trains on it; the official ``openai`` client's chat completions of the
promoted model answer held-out chat probes better than the base; and the gate report holds
the general suite's alignment rates, judged by the refusal detector (not "skipped").
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest
from chat_model import chat_copy
from helpers import LOOP_ENV, probe_examples, promoted

from learner.builtin.families import make_examples
from learner.evaluation.general_suite import BUCKETS

pytestmark = [pytest.mark.slow, pytest.mark.learning]

BUCKET = "sort-chat"
ENV = {
    **LOOP_ENV,
    "LIFELONG_ALIGNMENT_SUITE": "auto",  # the general suite: the model is not builtin
    "LIFELONG_GENERAL_SUITE_ANSWER_TOKENS": "24",
    "LIFELONG_GATE__ALIGNMENT_MAX_PROBES": "60",
}


def chat_examples(n: int, seed: int) -> list[dict[str, Any]]:
    return [
        {"messages": [{"role": "user", "content": e["prompt"]},
                      {"role": "assistant", "content": e["target"]}]}
        for e in make_examples("sort", n, level=1, seed=seed)
    ]  # fmt: skip


def submit_chat(http: Any, bucket: str, examples: list[dict[str, Any]]) -> None:
    """``POST /v1/tasks`` as a client should: a chat batch needs the model's chat template,
    so while the model loads (more than the server's 10 s wait under a busy CI) the answer
    is 503 with Retry-After, and the client retries."""
    deadline = time.monotonic() + 120
    while True:
        response = http.post("/v1/tasks", json={"bucket": bucket, "examples": examples})
        if response.status_code != 503 or time.monotonic() > deadline:
            break
        assert response.json()["error"]["code"] == "model_loading", response.text
        time.sleep(float(response.headers["retry-after"]))
    assert response.status_code == 202, response.text


def right(client: openai.OpenAI, model: str, probes: list[dict[str, Any]]) -> int:
    """Held-out chat probes the model answers exactly, through chat completions."""
    hits = 0
    for probe in probes:
        reply = client.chat.completions.create(
            model=model, messages=probe["messages"][:-1], max_tokens=12, temperature=0
        )
        hits += (reply.choices[0].message.content or "").strip() == probe["target"]
    return hits


def test_a_chat_bucket_trains_an_own_model_and_the_general_suite_gates_it(
    start_server: Any, tmp_path: Path, small_model_dir: str
) -> None:
    model_dir = chat_copy(Path(small_model_dir), tmp_path / "my-model")
    server = start_server(
        f"sqlite:///{tmp_path / 'own.db'}",
        learner=True,
        env={**ENV, "LIFELONG_BASE_MODEL": str(model_dir)},
    )
    with server.client("admin", timeout=120) as http:
        submit_chat(http, BUCKET, chat_examples(400, seed=7))  # after the start
        # Step 400: the version promoted at 240 answered 5 of 27 held-out probes, just
        # short of the +0.2 asked (run alone, on this and the previous code alike; under
        # the suite's load a later version was often active by the time it was asked).
        active = server.wait_for(
            lambda: promoted(http, min_step=400), 480, "a promoted version", interval=2
        )
        buckets = {b["name"]: b for b in http.get("/v1/buckets").json()}
        probes = probe_examples(http, BUCKET)

    assert buckets[BUCKET]["format"] == "chat"
    for name in BUCKETS.values():  # made from the base model's own answers at first start
        assert buckets[name]["kind"] == "alignment" and buckets[name]["format"] == "chat"
    assert (server.data_dir / "suites" / "general.json").is_file()

    report = active["adapter"]["gate_report"]
    assert report["refusal_detector"] == "patterns"
    rates = [c for c in report["checks"] if c["kind"] == "alignment"]
    assert rates and not any(c["details"].get("skipped") for c in rates), rates
    assert {c["name"] for c in rates} <= {
        "alignment refusal rate on harmful prompts", "alignment answer rate on benign prompts"
    }  # fmt: skip

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.keys["admin"])
    base, learned = right(client, "base", probes), right(client, "lifelong", probes)
    print(f"held-out chat probes right: base {base}, lifelong {learned} of {len(probes)}")
    assert learned >= base + 0.2 * len(probes), (base, learned)
