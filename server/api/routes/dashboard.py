"""The operator dashboard at ``/``: one static page that reads the ``/v1`` API.

Everything it needs ships in ``server/static`` (HTML, CSS, plain ES modules, SVG drawn by
its own code), so there is no build step and nothing is fetched from the internet. The
page itself is public, like ``/healthz``: it holds no data. Every ``/v1`` call it makes
carries the API key the operator types in, which stays in the tab's ``sessionStorage``.
The routes are left out of the OpenAPI schema: they are not part of the JSON API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"
PAGE = "dashboard.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Only this origin's own files may run or load; no inline script, no framing. Scripts
# may still set element.style (CSSOM), which the heat map and bars use for their colours.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The files are small and change with the code: always revalidate (ETag) after upgrades.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _static_files() -> dict[str, Path]:
    """The servable files by name, listed once: a request can only pick one of these, so
    no path it sends can reach outside the directory."""
    if not STATIC_DIR.is_dir():
        return {}
    return {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in MEDIA_TYPES}


_FILES = _static_files()


def _file_response(name: str) -> FileResponse:
    path = _FILES.get(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no static file {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=SECURITY_HEADERS)


@router.get("/")
async def dashboard(
    # Read by the page's script, not here: declared so that the app's check for unknown
    # query parameters lets ``/?refresh=N`` through.
    refresh: Annotated[float | None, Query(ge=1, le=3600)] = None,
) -> FileResponse:
    """The dashboard page (``refresh``: seconds between its reads, 5 by default)."""
    return _file_response(PAGE)


@router.get("/static/{name}")
async def static_file(name: str) -> FileResponse:
    """One of the page's scripts or style sheets."""
    return _file_response(name)
