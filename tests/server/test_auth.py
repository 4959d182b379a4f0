"""Bearer keys and scopes, stored and environment keys, and the first-start admin key."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from learner.store.db import write_transaction
from learner.store.keys import create_key, list_keys, revoke_key
from server.api.app import create_app
from server.auth import keys as authenticator_module
from server.process.settings import Settings

if TYPE_CHECKING:
    from tests.server.conftest import Api, ClientFactory

TASKS = "/v1/tasks"


def body(n: int = 2, start: int = 0) -> dict[str, object]:
    return {
        "bucket": "auth",
        "examples": [{"prompt": f"p{i}", "target": f"t{i}"} for i in range(start, start + n)],
    }


UNAUTHORISED: list[tuple[dict[str, str], str]] = [
    ({}, "missing API key"),
    ({"Authorization": "Bearer "}, "missing API key"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing API key"),
    ({"Authorization": "test-submit-key"}, "missing API key"),
    ({"Authorization": "Bearer not-a-key"}, "invalid or revoked API key"),
    ({"Authorization": "Bearer test-submit-key-but-longer"}, "invalid or revoked"),
]


def test_post_without_a_valid_key_is_401(
    client: TestClient, api: Api, subtests: pytest.Subtests
) -> None:
    for headers, message in UNAUTHORISED:
        with subtests.test(str(headers)):
            response = client.post(TASKS, json=body(), headers=headers)
            assert response.status_code == 401
            assert message in api.error(response)
            assert response.headers["www-authenticate"] == "Bearer"
            assert api.count() == 0


def test_scopes(client: TestClient, api: Api) -> None:
    read = client.post(TASKS, json=body(), headers=api.auth("read"))
    assert read.status_code == 403
    assert "scope 'read'" in api.error(read) and "needs 'submit'" in api.error(read)
    assert api.count() == 0

    submit = client.post(TASKS, json=body(), headers=api.auth("submit"))
    assert submit.status_code == 202, submit.text
    admin = client.post(TASKS, json=body(1, start=5), headers=api.auth("admin"))
    assert admin.status_code == 202, admin.text
    assert api.count() == 3
    for scope in ("read", "submit", "admin"):
        assert client.get("/v1/buckets", headers=api.auth(scope)).status_code == 200


def test_auth_is_checked_before_the_body(client: TestClient, api: Api) -> None:
    """A bad body from an unauthorised caller is refused for the key, not the body."""
    bad = {"bucket": "a b", "examples": []}
    assert client.post(TASKS, json=bad).status_code == 401
    assert client.post(TASKS, json=bad, headers=api.auth("read")).status_code == 403


def test_stored_key_works_until_revoked(make_client: ClientFactory, api: Api) -> None:
    client = make_client(auth_cache_seconds=0)
    with write_transaction(api.engine) as conn:
        key = create_key(conn, "submit", "robot")
    first = client.post(TASKS, json=body(), headers=api.bearer(key))
    assert first.status_code == 202, first.text

    with api.engine.connect() as conn:
        key_id = next(k.id for k in list_keys(conn) if k.name == "robot")
    with write_transaction(api.engine) as conn:
        assert revoke_key(conn, key_id)
    revoked = client.post(TASKS, json=body(2, start=10), headers=api.bearer(key))
    assert revoked.status_code == 401
    assert "invalid or revoked API key" in api.error(revoked)
    assert client.get("/v1/buckets", headers=api.bearer(key)).status_code == 401
    assert api.count() == 2


def test_stored_read_key_cannot_submit(make_client: ClientFactory, api: Api) -> None:
    client = make_client()
    with write_transaction(api.engine) as conn:
        key = create_key(conn, "read", "viewer")
    assert client.get("/v1/buckets", headers=api.bearer(key)).status_code == 200
    response = client.post(TASKS, json=body(), headers=api.bearer(key))
    assert response.status_code == 403
    assert api.count() == 0


def test_first_start_writes_one_admin_key(
    make_client: ClientFactory, api: Api, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = data_dir / "admin.key"
    assert not key_file.exists()
    client = make_client(api_keys="")
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert key
    assert key in capsys.readouterr().out  # printed once, at the first start

    # The key is an admin key, stored hashed.
    response = client.post(TASKS, json=body(), headers=api.bearer(key))
    assert response.status_code == 202, response.text
    with api.engine.connect() as conn:
        keys = list_keys(conn)
    assert [(k.scope, k.revoked_at) for k in keys] == [("admin", None)]
    assert key not in {k.key_hash for k in keys}

    # A second start finds the key and creates none; the file is left alone.
    second = make_client(api_keys="")
    assert key not in capsys.readouterr().out
    assert key_file.read_text().strip() == key
    assert second.post(TASKS, json=body(1, 9), headers=api.bearer(key)).status_code == 202
    # Even without the file, a start with keys in the database does not make another.
    key_file.unlink()
    make_client(api_keys="")
    assert not key_file.exists()
    with api.engine.connect() as conn:
        assert len(list_keys(conn)) == 1


def test_environment_keys(
    db_url: str, api: Api, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFELONG_API_KEYS", "submit:env-submit-key, read:env-read-key")
    # No api_keys argument: the settings read LIFELONG_API_KEYS.
    settings = Settings(data_dir=data_dir, database_url=db_url)
    with TestClient(create_app(settings)) as client:
        submitted = client.post(TASKS, json=body(), headers=api.bearer("env-submit-key"))
        assert submitted.status_code == 202, submitted.text
        read = client.post(TASKS, json=body(1, 5), headers=api.bearer("env-read-key"))
        assert read.status_code == 403
        assert client.get("/v1/buckets", headers=api.bearer("env-read-key")).status_code == 200
        assert client.get("/v1/buckets", headers=api.bearer("env-read")).status_code == 401
    # Environment keys are never written anywhere, and no admin key is generated.
    assert not (data_dir / "admin.key").exists()
    with api.engine.connect() as conn:
        assert list_keys(conn) == []
    assert api.count() == 2


def test_bad_environment_keys_stop_the_start(
    make_client: ClientFactory, subtests: pytest.Subtests
) -> None:
    for spec, message in [
        ("justakey", "not of the form scope:key"),
        ("root:abc", "unknown scope 'root'"),
    ]:
        with subtests.test(spec), pytest.raises(ValueError, match=message):
            make_client(api_keys=spec)


def test_unauthenticated_invalid_json_is_401_not_422(client: TestClient, api: Api) -> None:
    """The key is checked before the body is read: no key, no parsing."""
    headers = {"Content-Type": "application/json"}
    response = client.post(TASKS, content=b"{not json", headers=headers)
    assert response.status_code == 401, response.text
    assert "missing API key" in api.error(response)
    bad_key = {**headers, **api.bearer("made-up")}
    assert client.post(TASKS, content=b"{not json", headers=bad_key).status_code == 401


def test_unknown_keys_are_cached_as_misses(
    make_client: ClientFactory, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeated made-up key is looked up once per miss interval, not per request."""
    client = make_client(auth_failure_limit=1000)
    authenticator = client.app.state.lifelong.authenticator  # type: ignore[attr-defined]
    lookups: list[str] = []
    real = authenticator_module.lookup_key

    def counting(conn: Any, key: str) -> Any:
        lookups.append(key)
        return real(conn, key)

    monkeypatch.setattr(authenticator_module, "lookup_key", counting)
    for _ in range(10):
        assert client.get("/v1/buckets", headers=api.bearer("made-up")).status_code == 401
    assert lookups == ["made-up"]
    authenticator._cache.clear()  # the miss expires: the key is looked up again
    assert client.get("/v1/buckets", headers=api.bearer("made-up")).status_code == 401
    assert lookups == ["made-up", "made-up"]


def test_repeated_failures_are_throttled_but_valid_keys_pass(
    make_client: ClientFactory, api: Api
) -> None:
    client = make_client(auth_failure_limit=5, auth_failure_window_seconds=60)
    statuses = [
        client.get("/v1/buckets", headers=api.bearer(f"guess-{i}")).status_code for i in range(8)
    ]
    assert statuses == [401] * 5 + [429] * 3
    throttled = client.get("/v1/buckets", headers=api.bearer("guess-9"))
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert "too many failed authentications" in api.error(throttled)
    # Same address, a valid key: never throttled (env keys are known without a lookup).
    assert client.get("/v1/buckets", headers=api.auth("read")).status_code == 200
    assert client.post(TASKS, json=body(), headers=api.auth("submit")).status_code == 202


def test_a_stored_key_seen_valid_is_not_throttled(make_client: ClientFactory, api: Api) -> None:
    """Its cache entry expires at once here, so each request looks it up again."""
    client = make_client(auth_cache_seconds=0, auth_failure_limit=3)
    with write_transaction(api.engine) as conn:
        key = create_key(conn, "read", "dashboard")
    assert client.get("/v1/buckets", headers=api.bearer(key)).status_code == 200
    for i in range(5):
        client.get("/v1/buckets", headers=api.bearer(f"guess-{i}"))
    assert client.get("/v1/buckets", headers=api.bearer("guess-x")).status_code == 429
    assert client.get("/v1/buckets", headers=api.bearer(key)).status_code == 200
