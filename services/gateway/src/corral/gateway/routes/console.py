"""``/console``: the web console's static files, and ``/console/config.json``.

The console is a page and a few ES modules (``corral/gateway/console/``, no build step, nothing
from a CDN) that run in the browser and talk only to the public API under ``/v1`` with the API key
the user signs in with; the gateway serves them without auth and without any data of its own, so
the console can show nothing the key could not read through the API. ``config.json`` holds what the
page cannot ask the API: the Jaeger URL to link traces to, and the list price table
(``corral.contracts.prices``) costs are estimated with.

The files are read once, when the app is made, and served from memory: only names that exist
there are answered (no path from a request ever reaches the file system). A strict
Content-Security-Policy lets the page load only its own files and connect only to its own origin.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Final

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from corral.contracts.api.errors import ApiError
from corral.contracts.prices import LIST_PRICES
from corral.gateway.state import gateway_state

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)

MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

#: Own files only; fetch/XHR to the same origin only; no inline script, no frames.
SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def _walk(folder: Traversable, prefix: str = "") -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for entry in folder.iterdir():
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            found.update(_walk(entry, f"{name}/"))
        elif any(name.endswith(suffix) for suffix in MEDIA_TYPES):
            found[name] = entry.read_bytes()
    return found


#: Every asset by its path under /console/, read once.
ASSETS: Final[dict[str, bytes]] = _walk(files("corral.gateway").joinpath("console"))


def _asset(name: str) -> Response:
    body = ASSETS.get(name)
    if body is None:
        raise ApiError("not_found_error", f"the console has no file {name!r}; it is at /console/")
    media_type = next(kind for suffix, kind in MEDIA_TYPES.items() if name.endswith(suffix))
    return Response(body, media_type=media_type, headers=SECURITY_HEADERS)


@router.get("", response_model=None)
async def console_root() -> Response:
    return RedirectResponse("/console/", status_code=308)


@router.get("/", response_model=None)
async def console_page() -> Response:
    return _asset("index.html")


@router.get("/config.json", response_model=None)
async def console_config(request: Request) -> Response:
    settings = gateway_state(request).settings
    config = {"jaeger_url": settings.jaeger_url, "prices": LIST_PRICES}
    return JSONResponse(config, headers=SECURITY_HEADERS)


@router.get("/{name:path}", response_model=None)
async def console_asset(name: str) -> Response:
    return _asset(name)
