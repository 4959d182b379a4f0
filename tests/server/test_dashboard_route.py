"""The dashboard's files as the app serves them (the page itself: tests/e2e/test_dashboard.py)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from server.api.routes.dashboard import STATIC_DIR

# The page does not touch the database; one backend is enough.
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
IMPORT_RE = re.compile(r'^import .* from "\./([^"]+)";$|^} from "\./([^"]+)";$', re.M)


@sqlite_only
def test_page_and_files_need_no_key_and_stay_local(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    # Nothing from another origin: every referenced file is one of ours and is served.
    assert "http://" not in page.text and "https://" not in page.text
    for name in re.findall(r'(?:src|href)="/static/([^"]+)"', page.text):
        served = client.get(f"/static/{name}")
        assert served.status_code == 200, name
    script = client.get("/static/dashboard.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/dashboard.css").headers["content-type"].startswith("text/css")


def test_every_module_import_resolves() -> None:
    for script in STATIC_DIR.glob("*.js"):
        text = script.read_text()
        for groups in IMPORT_RE.findall(text):
            name = next(g for g in groups if g)
            assert (STATIC_DIR / name).is_file(), f"{script.name} imports missing {name}"
        # Server text goes in through textContent only (see dashboard-dom.js).
        for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in text, f"{script.name} uses {sink}"


@sqlite_only
def test_only_the_static_files_are_reachable(client: TestClient) -> None:
    for path in ("/static/missing.js", "/static/..%2Fapp.py", "/static/%2e%2e%2fauth.py"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert set(response.json()) == {"error"}
    assert client.get("/static/../routes/dashboard.py").status_code == 404


@sqlite_only
def test_query_parameters_and_schema(client: TestClient) -> None:
    assert client.get("/?refresh=2").status_code == 200
    assert client.get("/?refresh=0").status_code == 422
    assert client.get("/?bogus=1").status_code == 422
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)
