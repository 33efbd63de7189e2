"""The admin API (``/v1/organizations/...``: workspaces and API keys) over ``httpx``: the SDK has no
client for it. Needs a key with role ``admin``: ``--admin-key``, else ``CORRAL_ADMIN_KEY``, else the
``.corral/admin-key`` file ``make up`` writes, else the API key itself (Corral answers 403 if it is
not an admin key)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from corral.cli.connection import find_env_file
from corral.cli.failure import Failure

ADMIN_KEY_FILE = "admin-key"
#: The largest page the admin API's lists answer.
PAGE = 1000


def admin_key_file(cwd: Path) -> str | None:
    """The key in ``.corral/admin-key`` next to the nearest ``.corral/env``."""
    env_file = find_env_file(cwd)
    if env_file is None or not (env_file.parent / ADMIN_KEY_FILE).is_file():
        return None
    return (env_file.parent / ADMIN_KEY_FILE).read_text().strip() or None


class AdminClient:
    def __init__(self, base_url: str, key: str) -> None:
        self._base_url = base_url
        self._http = httpx.Client(
            base_url=f"{base_url}/v1/organizations",
            headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
            timeout=30,
        )

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            answer = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise Failure(f"cannot reach Corral at {self._base_url} ({error}): is it running? (`make up`)") from None
        if answer.status_code >= 400:
            raise Failure(_refusal(answer))
        body: dict[str, Any] = answer.json()
        return body

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a list, following ``after_id`` while ``has_more``."""
        params = {"limit": PAGE, **params}
        while True:
            page = self.call("GET", path, params=params)
            yield from page.get("data", [])
            if not page.get("has_more") or not page.get("last_id"):
                return
            params["after_id"] = page["last_id"]


def _refusal(answer: httpx.Response) -> str:
    try:
        message = answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = answer.text[:200]
    if answer.status_code == 401:
        return "the admin key was refused (401): check --admin-key, CORRAL_ADMIN_KEY or .corral/admin-key"
    if answer.status_code == 403:
        return f"not allowed (403): {message}"
    if answer.status_code == 404:
        return f"not found (404): {message}"
    return f"Corral refused the request ({answer.status_code}): {message}"


def workspace_id(client: AdminClient, name: str) -> str:
    """A workspace's id from its name (or its id)."""
    if name.startswith("wrkspc_"):
        return name
    found = [w["id"] for w in client.pages("/workspaces") if w.get("name") == name]
    if not found:
        raise Failure(f"no workspace named {name!r}: create it with `corral workspaces create {name}`")
    if len(found) > 1:
        raise Failure(f"{len(found)} workspaces are named {name!r} ({', '.join(found)}): name one by its id")
    return str(found[0])
