"""Bucket reads, example pages, health, readiness and the OpenAPI document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from server.process.settings import LimitSettings

if TYPE_CHECKING:
    from tests.server.conftest import Api, ClientFactory


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    # Room for a few hundred examples per request.
    return make_client(limits=LimitSettings(max_examples_per_request=1000))


def submit(
    client: TestClient, api: Api, bucket: str, batch: list[dict[str, Any]], **fields: Any
) -> dict[str, Any]:
    response = client.post(
        "/v1/tasks", json={"bucket": bucket, "examples": batch, **fields}, headers=api.auth()
    )
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


def all_pages(
    client: TestClient, api: Api, bucket: str, limit: int, split: str | None = None
) -> list[dict[str, Any]]:
    """Follow ``next_after_id`` to the end, checking every page on the way."""
    params: dict[str, Any] = {"limit": limit}
    if split is not None:
        params["split"] = split
    found: list[dict[str, Any]] = []
    after = 0
    for _ in range(1000):
        response = client.get(
            f"/v1/buckets/{bucket}/examples",
            params={**params, "after_id": after},
            headers=api.auth("read"),
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["bucket"] == bucket and page["split"] == split
        assert len(page["examples"]) <= limit
        found.extend(page["examples"])
        if page["next_after_id"] is None:
            break
        assert len(page["examples"]) == limit
        assert page["next_after_id"] == page["examples"][-1]["id"]
        after = page["next_after_id"]
    else:
        pytest.fail("pagination did not end")
    return found


def test_bucket_list_and_detail(client: TestClient, api: Api) -> None:
    assert client.get("/v1/buckets", headers=api.auth("read")).json() == []
    submit(client, api, "arith", api.examples(120))
    submit(client, api, "safety", api.examples(7, prefix="s"), kind="alignment", grader="numeric")

    listed = client.get("/v1/buckets", headers=api.auth("read"))
    assert listed.status_code == 200
    by_name = {b["name"]: b for b in listed.json()}
    assert list(by_name) == ["arith", "safety"]  # creation order
    arith, safety = by_name["arith"], by_name["safety"]
    assert (arith["kind"], arith["grader"], arith["status"]) == ("task", "exact", "active")
    assert (safety["kind"], safety["grader"]) == ("alignment", "numeric")
    assert arith["train_examples"] + arith["probe_examples"] == 120
    assert 0 < arith["probe_examples"] < 30
    assert safety["train_examples"] + safety["probe_examples"] == 7
    assert arith["probe_accuracy"] is None and arith["probe_accuracy_step"] is None

    detail = client.get("/v1/buckets/arith", headers=api.auth("read"))
    assert detail.status_code == 200
    assert detail.json() == arith


def test_unknown_bucket_is_404(client: TestClient, api: Api, subtests: pytest.Subtests) -> None:
    submit(client, api, "exists", api.examples(1))
    for path in ("/v1/buckets/nope", "/v1/buckets/nope/examples"):
        with subtests.test(path):
            response = client.get(path, headers=api.auth("read"))
            assert response.status_code == 404
            assert "bucket 'nope' does not exist" in api.error(response)


def test_examples_pages_cover_each_split_exactly(client: TestClient, api: Api) -> None:
    batch = api.examples(250)
    submit(client, api, "paged", batch)
    submit(client, api, "other", api.examples(30, prefix="o"))  # must not leak in
    summary = client.get("/v1/buckets/paged", headers=api.auth("read")).json()

    everything = all_pages(client, api, "paged", limit=40)
    train = all_pages(client, api, "paged", limit=40, split="train")
    probe = all_pages(client, api, "paged", limit=7, split="probe")

    assert len(everything) == 250
    assert len(train) == summary["train_examples"]
    assert len(probe) == summary["probe_examples"]
    assert {e["split"] for e in train} == {"train"}
    assert {e["split"] for e in probe} == {"probe"}
    for page in (everything, train, probe):
        ids = [e["id"] for e in page]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert sorted(e["id"] for e in train + probe) == [e["id"] for e in everything]
    sent = {(e["prompt"], e["target"], e["id"]) for e in batch}
    assert {(e["prompt"], e["target"], e["external_id"]) for e in everything} == sent


def test_page_size_equal_to_the_count_ends_with_an_empty_page(client: TestClient, api: Api) -> None:
    submit(client, api, "exact", api.examples(10))
    first = client.get(
        "/v1/buckets/exact/examples", params={"limit": 10}, headers=api.auth("read")
    ).json()
    assert len(first["examples"]) == 10 and first["next_after_id"] is not None
    second = client.get(
        "/v1/buckets/exact/examples",
        params={"limit": 10, "after_id": first["next_after_id"]},
        headers=api.auth("read"),
    ).json()
    assert second["examples"] == [] and second["next_after_id"] is None


def test_default_page_is_100_examples(client: TestClient, api: Api) -> None:
    submit(client, api, "big", api.examples(150))
    page = client.get("/v1/buckets/big/examples", headers=api.auth("read")).json()
    assert len(page["examples"]) == 100
    assert page["next_after_id"] == page["examples"][-1]["id"]


BAD_QUERIES: list[tuple[dict[str, Any], str]] = [
    ({"split": "test"}, "split"),
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"after_id": -1}, "after_id"),
]


def test_bad_example_query_is_422(client: TestClient, api: Api, subtests: pytest.Subtests) -> None:
    submit(client, api, "q", api.examples(3))
    for params, message in BAD_QUERIES:
        with subtests.test(str(params)):
            response = client.get("/v1/buckets/q/examples", params=params, headers=api.auth("read"))
            assert response.status_code == 422
            assert message in api.error(response)


def test_bucket_reads_need_a_key(client: TestClient, api: Api, subtests: pytest.Subtests) -> None:
    submit(client, api, "q", api.examples(1))
    for path in ("/v1/buckets", "/v1/buckets/q", "/v1/buckets/q/examples"):
        with subtests.test(path):
            response = client.get(path)
            assert response.status_code == 401
            assert "missing API key" in api.error(response)
            assert client.get(path, headers=api.auth("read")).status_code == 200


def test_openapi_lists_the_endpoints(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/v1/tasks": "post",
        "/v1/buckets": "get",
        "/v1/buckets/{name}": "get",
        "/v1/buckets/{name}/examples": "get",
        "/healthz": "get",
        "/readyz": "get",
    }
    for path, method in expected.items():
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing from OpenAPI"
    task_body = paths["/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]
    assert task_body["schema"]["$ref"].endswith("/TaskSubmission")
    assert "202" in paths["/v1/tasks"]["post"]["responses"]


def test_unknown_query_parameters_are_422(client: TestClient, api: Api) -> None:
    response = client.get("/v1/buckets", params={"limt": "5"}, headers=api.auth("read"))
    assert response.status_code == 422
    assert "unknown query parameter(s) 'limt'" in api.error(response)


def test_a_repeated_query_parameter_is_422(client: TestClient, api: Api) -> None:
    response = client.get("/v1/teacher?decisions=5&decisions=6", headers=api.auth("read"))
    assert response.status_code == 422
    assert "'decisions' given more than once" in api.error(response)
