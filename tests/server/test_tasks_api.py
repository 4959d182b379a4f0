"""``POST /v1/tasks``: the happy path, duplicates, and every kind of bad input.

Every bad request must get a 4xx whose message names the problem, and must leave the
stored examples exactly as they were (nothing is half-written).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from learner.store.ingest import content_hash, split_for_hash
from learner.store.models import Bucket, Example
from server.process.settings import LimitSettings

if TYPE_CHECKING:
    from tests.server.conftest import Api, ClientFactory

# The bad-input table below is written against these limits.
LIMITS = LimitSettings(
    max_examples_per_request=5, max_prompt_chars=20, max_target_chars=10, max_body_bytes=4096
)


def examples(n: int, start: int = 0, prefix: str = "q") -> list[dict[str, Any]]:
    """``n`` distinct valid examples, short enough for LIMITS."""
    return [
        {"prompt": f"{prefix}{i}+{i}=?", "target": str(2 * i), "id": f"{prefix}-{i}"}
        for i in range(start, start + n)
    ]


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client(limits=LIMITS)


def test_submit_stores_the_batch(client: TestClient, api: Api) -> None:
    batch = examples(3)
    response = client.post(
        "/v1/tasks", json={"bucket": "arith", "examples": batch}, headers=api.auth()
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"bucket": "arith", "accepted": 3, "duplicates": 0}
    assert api.count() == 3

    query = select(Example.prompt, Example.target, Example.external_id, Example.split).join(
        Bucket, Bucket.id == Example.bucket_id
    )
    with api.engine.connect() as conn:
        rows = {(r.prompt, r.target, r.external_id, r.split) for r in conn.execute(query)}
    assert rows == {
        (
            e["prompt"],
            e["target"],
            e["id"],
            split_for_hash(content_hash("arith", e["prompt"], e["target"])),
        )
        for e in batch
    }


def test_resubmission_and_in_batch_repeats_are_duplicates(client: TestClient, api: Api) -> None:
    first = client.post(
        "/v1/tasks", json={"bucket": "b", "examples": examples(4)}, headers=api.auth()
    )
    assert first.json() == {"bucket": "b", "accepted": 4, "duplicates": 0}
    batch = [*examples(2, start=3), examples(1, start=3)[0], *examples(2)]
    second = client.post("/v1/tasks", json={"bucket": "b", "examples": batch}, headers=api.auth())
    assert second.status_code == 202
    # New: example 4 only. Repeats: 3 (stored), 3 (again in the batch), 0 and 1 (stored).
    assert second.json() == {"bucket": "b", "accepted": 1, "duplicates": 4}
    assert api.count() == 5


def test_kind_and_grader_are_kept_and_a_conflict_is_409(client: TestClient, api: Api) -> None:
    body = {"bucket": "align", "kind": "alignment", "grader": "numeric", "examples": examples(2)}
    assert client.post("/v1/tasks", json=body, headers=api.auth()).status_code == 202
    bucket = client.get("/v1/buckets/align", headers=api.auth("read")).json()
    assert (bucket["kind"], bucket["grader"]) == ("alignment", "numeric")

    for change in ({"kind": "task"}, {"grader": "exact"}):
        conflicting = {**body, **change, "examples": examples(3, start=10)}
        response = client.post("/v1/tasks", json=conflicting, headers=api.auth())
        assert response.status_code == 409
        assert "already exists" in api.error(response)
        assert api.count() == 2
    # Leaving kind and grader out means "whatever the bucket has".
    more = client.post(
        "/v1/tasks", json={"bucket": "align", "examples": examples(1, start=20)}, headers=api.auth()
    )
    assert more.json()["accepted"] == 1


def test_submitting_client_is_recorded(client: TestClient, api: Api) -> None:
    client.post("/v1/tasks", json={"bucket": "b", "examples": examples(1)}, headers=api.auth())
    client.post(
        "/v1/tasks", json={"bucket": "b", "examples": examples(1, 1)}, headers=api.auth("admin")
    )
    with api.engine.connect() as conn:
        clients = list(conn.execute(select(Example.client).order_by(Example.id)).scalars())
    # Env keys are named env-<position> in LIFELONG_API_KEYS (admin first, submit second).
    assert clients == ["env-2", "env-1"]


def test_exact_limits_are_accepted(client: TestClient, api: Api) -> None:
    batch = [
        {"prompt": "p" * LIMITS.max_prompt_chars, "target": "t" * LIMITS.max_target_chars},
        *examples(LIMITS.max_examples_per_request - 1),
    ]
    response = client.post(
        "/v1/tasks", json={"bucket": "edge", "examples": batch}, headers=api.auth()
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == LIMITS.max_examples_per_request
    assert api.count() == LIMITS.max_examples_per_request


def test_missing_content_type_is_read_as_json(client: TestClient, api: Api) -> None:
    body = json.dumps({"bucket": "b", "examples": examples(1)}).encode()
    response = client.post("/v1/tasks", content=body, headers=api.auth())
    assert response.status_code == 202, response.text


# --------------------------------------------------------------------------- bad input


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"bucket": "b", "examples": examples(2, start=100)}
    body.update(changes)
    return body


def _ex(**changes: Any) -> list[dict[str, Any]]:
    """Two examples, the second of them changed (so a valid one comes first)."""
    first, second = examples(2, start=100)
    second.update(changes)
    return [first, second]


def _without(key: str) -> list[dict[str, Any]]:
    first, second = examples(2, start=100)
    del second[key]
    return [first, second]


def _json(value: Any) -> dict[str, Any]:
    return {"content": json.dumps(value).encode(), "headers": {"content-type": "application/json"}}


def _raw(content: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": content, "headers": {"content-type": content_type}}


def _chunks(data: bytes, size: int = 512) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


_VALID = json.dumps(_body()).encode()
_TOO_BIG = json.dumps(
    _body(examples=[{"prompt": "p" * 20, "target": "t", "id": "x" * 100} for _ in range(30)])
).encode()
assert len(_TOO_BIG) > LIMITS.max_body_bytes

# id -> (request keyword arguments, expected status, substring of the error message)
BAD_REQUESTS: dict[str, tuple[dict[str, Any], int, str]] = {
    "malformed json": (_raw(b'{"bucket": "b", "examples": ['), 422, "not valid JSON"),
    "not json at all": (_raw(b"bucket=b"), 422, "not valid JSON"),
    "json list body": (_json([1, 2]), 422, "body: Input should be a valid dictionary"),
    "json null body": (_json(None), 422, "body: Input should be a valid dictionary"),
    "no body": ({"content": b"", "headers": {}}, 422, "body: Field required"),
    "empty body": (_raw(b""), 422, "body: Field required"),
    "missing bucket": (_json({"examples": examples(1)}), 422, "bucket: Field required"),
    "missing examples": (_json({"bucket": "b"}), 422, "examples: Field required"),
    "missing prompt": (_json(_body(examples=_without("prompt"))), 422, "examples[1].prompt"),
    "missing target": (_json(_body(examples=_without("target"))), 422, "examples[1].target"),
    "empty prompt": (_json(_body(examples=_ex(prompt=""))), 422, "examples[1].prompt"),
    "empty target": (_json(_body(examples=_ex(target=""))), 422, "examples[1].target"),
    "no examples": (_json(_body(examples=[])), 422, "at least one example"),
    "prompt is a number": (
        _json(_body(examples=_ex(prompt=7))),
        422,
        "examples[1].prompt: Input should be a valid string",
    ),
    "target is null": (
        _json(_body(examples=_ex(target=None))),
        422,
        "examples[1].target: Field required",
    ),
    "id is a list": (_json(_body(examples=_ex(id=["x"]))), 422, "examples[1].id"),
    "id too long": (_json(_body(examples=_ex(id="i" * 129))), 422, "examples[1].id"),
    "examples is a string": (
        _json(_body(examples="p,t")),
        422,
        "examples: Input should be a valid list",
    ),
    "example is a string": (_json(_body(examples=["p -> t"])), 422, "examples[0]"),
    "bucket is a number": (_json(_body(bucket=12)), 422, "bucket: Input should be a valid string"),
    "kind is a number": (_json(_body(kind=1)), 422, "kind"),
    "prompt too long": (
        _json(_body(examples=_ex(prompt="p" * 21))),
        422,
        "examples[1].prompt has 21 characters, the limit is 20",
    ),
    "target too long": (
        _json(_body(examples=_ex(target="t" * 11))),
        422,
        "examples[1].target has 11 characters, the limit is 10",
    ),
    "too many examples": (
        _json(_body(examples=examples(6))),
        413,
        "6 examples in one request, the limit is 5",
    ),
    "unknown kind": (_json(_body(kind="curriculum")), 422, "kind: Input should be 'task' or"),
    "unknown grader": (_json(_body(grader="fuzzy")), 422, "unknown grader 'fuzzy'"),
    "bucket with space": (_json(_body(bucket="my bucket")), 422, "bucket name 'my bucket'"),
    "bucket with slash": (_json(_body(bucket="a/b")), 422, "bucket name 'a/b'"),
    "bucket with unicode": (_json(_body(bucket="bücket")), 422, "bucket name 'bücket'"),
    "bucket with emoji": (_json(_body(bucket="b🙂")), 422, "bucket name"),
    "empty bucket": (_json(_body(bucket="")), 422, "bucket name ''"),
    "bucket of 65 chars": (_json(_body(bucket="b" * 65)), 422, "bucket name"),
    "bucket starting with a dot": (_json(_body(bucket=".hidden")), 422, "bucket name"),
    "bucket with newline": (_json(_body(bucket="b\n")), 422, "bucket name"),
    "unknown top-level field": (
        _json(_body(priority=3)),
        422,
        "priority: Extra inputs are not permitted",
    ),
    "unknown example field": (
        _json(_body(examples=_ex(label="x"))),
        422,
        "examples[1].label: Extra inputs are not permitted",
    ),
    "body over max_body_bytes": (_raw(_TOO_BIG), 413, "larger than 4096 bytes"),
    "chunked body over max_body_bytes": (
        # Sent without Content-Length (chunked): the limit is enforced while reading.
        {"content": lambda: _chunks(_TOO_BIG), "headers": {"content-type": "application/json"}},
        413,
        "larger than 4096 bytes",
    ),
    "text/plain content type": (_raw(_VALID, "text/plain"), 415, "must be JSON"),
    "form content type": (
        _raw(b"bucket=b", "application/x-www-form-urlencoded"),
        415,
        "must be JSON",
    ),
}


def test_bad_input_is_4xx_with_a_message_and_stores_nothing(
    client: TestClient, api: Api, subtests: pytest.Subtests
) -> None:
    """One app and database per backend for the whole table; each case is a subtest."""
    seeded = client.post(
        "/v1/tasks", json={"bucket": "b", "examples": examples(3)}, headers=api.auth()
    )
    assert seeded.status_code == 202

    for case, (request, status, message) in BAD_REQUESTS.items():
        with subtests.test(case):
            before = api.count()
            content = request["content"]
            if callable(content):  # a fresh iterator for every run
                content = content()
            headers = {**api.auth(), **request.get("headers", {})}
            response = client.post("/v1/tasks", content=content, headers=headers)

            assert response.status_code == status, response.text
            assert message in api.error(response)
            assert api.count() == before
            buckets = client.get("/v1/buckets", headers=api.auth("read")).json()
            assert [b["name"] for b in buckets] == ["b"]
