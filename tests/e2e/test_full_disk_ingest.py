"""A server whose data dir (SQLite database included) is on a disk that fills up: a batch
is refused with a clear 507 and nothing of it is stored, reads, health and completions go
on, and once space returns the same batch is stored whole (a real uvicorn server on a
16 MiB tmpfs)."""

from __future__ import annotations

from pathlib import Path

import httpx
from conftest import ServerStarter
from disk import fill_filesystem
from helpers import submit

from learner.builtin.families import make_examples

BUCKET = "copy-l2"


def bucket_count(http: httpx.Client) -> int:
    body = http.get(f"/v1/buckets/{BUCKET}").json()
    return int(body["train_examples"]) + int(body["probe_examples"])


def test_a_full_disk_refuses_a_batch_whole_and_recovers(
    start_server: ServerStarter, small_filesystem: Path, tmp_path: Path
) -> None:
    data_dir = small_filesystem / "data"
    url = f"sqlite:///{data_dir / 'lifelong.db'}"
    env = {"LIFELONG_ALIGNMENT_SUITE": "false"}
    # The server's own output goes elsewhere (a service's log usually does).
    server = start_server(url, env=env, data_dir=data_dir, log_dir=tmp_path)
    first, batch = make_examples("copy", 20, 2, seed=1), make_examples("copy", 3000, 2, seed=2)
    with server.client("submit") as http:
        assert submit(http, BUCKET, first)["accepted"] == 20
        filler = fill_filesystem(small_filesystem)

        response = http.post("/v1/tasks", json={"bucket": BUCKET, "examples": batch})
        assert response.status_code == 507, response.text
        error = response.json()["error"]
        assert error["code"] == "disk_full" and "disk is full" in error["message"]
        assert "retry-after" in response.headers
        assert bucket_count(http) == 20  # nothing of the batch, the earlier one whole
        assert http.get("/healthz").status_code == 200
        answer = {"model": "lifelong", "prompt": "copy ab =", "max_tokens": 4, "temperature": 0}
        served = server.wait_for(  # still serving (once the base model has loaded)
            lambda: http.post("/v1/completions", json=answer).status_code == 200,
            120,
            "a completion",
        )
        assert served

        filler.unlink()  # space returns: the same batch, stored whole
        body = submit(http, BUCKET, batch)
        unique = len({(e["prompt"], e["target"]) for e in batch} - {
            (e["prompt"], e["target"]) for e in first})  # fmt: skip
        assert body["accepted"] == unique and body["accepted"] + body["duplicates"] == 3000
        assert bucket_count(http) == 20 + unique
    assert server.proc.poll() is None
