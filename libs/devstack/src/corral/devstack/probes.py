"""Health probes: small HTTP calls on loopback (stdlib only, never through a proxy)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

# Loopback only: ignore http_proxy/https_proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


def http(
    method: str,
    url: str,
    *,
    body: object | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 2.0,
) -> HttpResponse | None:
    """One request; the response for any HTTP status, None when nothing answered."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _opener.open(request, timeout=timeout) as response:
            return HttpResponse(response.status, response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return HttpResponse(exc.code, exc.read())
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


def http_status(url: str, timeout: float = 2.0) -> int | None:
    response = http("GET", url, timeout=timeout)
    return None if response is None else response.status
