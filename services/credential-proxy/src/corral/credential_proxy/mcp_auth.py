"""How an MCP connection authenticates: the ``Credentials`` seam and the per-request auth flow.

``Credentials.headers(caller, url, rejected=...)`` gives the headers that authenticate a session
(``Caller``: the session, its workspace and its vaults) to the server at ``url``;
``session_credentials.McpCredentials`` answers it from the session's vaults (``NO_CREDENTIALS`` adds
none). ``VaultAuth`` asks for them on **every HTTP request** of a connection (an ``httpx`` auth flow;
the answer comes from a short cache), so a pooled connection picks up a refreshed token and an
``mcp_oauth`` token past its ``expires_at`` is refreshed before it is sent. When the server answers
401 to a request that carried credentials, they are asked for again with ``rejected`` set to what was
refused (an ``mcp_oauth`` token is then refreshed) and the request is sent once more (once: a second
401 stands). Headers are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx2

logger = logging.getLogger(__name__)


class CredentialUnusable(Exception):
    """The session's credential for the server could not be used (a refresh failed, OpenBao is down);
    the message says why and names the credential, never a value."""


@dataclass(frozen=True)
class Caller:
    """On whose behalf a connection is made: the session, its workspace and its vaults."""

    workspace_id: str
    session_id: str
    vault_ids: tuple[str, ...]


class Credentials(Protocol):
    """Request headers that authenticate the session to the server at ``url``.

    Matched from the session's vaults, in its workspace, by URL (``static_bearer`` and ``mcp_oauth``
    credentials give ``Authorization: Bearer ...``); ``rejected`` is what the server just answered
    401 to (refresh if that can help). The value must never be logged or returned to the caller.

    Raises:
        CredentialUnusable: the matching credential cannot be used.
    """

    async def headers(
        self, caller: Caller, url: str, *, rejected: Mapping[str, str] | None = None
    ) -> dict[str, str]: ...


class _NoCredentials:
    """Every server is reached without authentication."""

    async def headers(
        self,
        caller: Caller,  # noqa: ARG002
        url: str,  # noqa: ARG002
        *,
        rejected: Mapping[str, str] | None = None,  # noqa: ARG002
    ) -> dict[str, str]:
        return {}


NO_CREDENTIALS: Credentials = _NoCredentials()


class VaultAuth(httpx2.Auth):
    """Every request of one connection carries the session's credentials for the server, asked for
    per request; a 401 to a request that carried some asks again (``rejected``) and resends once."""

    requires_request_body = True  # so the request can be sent again after a 401

    def __init__(self, credentials: Credentials, caller: Caller, url: str, recovered: Callable[[], None]) -> None:
        self._credentials, self._caller, self._url, self._recovered = credentials, caller, url, recovered
        self.problem: str | None = None
        """Why the credential could not be used the last time it was asked for (``None``: it could)."""

    async def _headers(self, rejected: Mapping[str, str] | None) -> dict[str, str] | None:
        try:
            headers = await self._credentials.headers(self._caller, self._url, rejected=rejected)
        except CredentialUnusable as exc:
            self.problem = str(exc)
            logger.warning(
                "MCP credential unusable",
                extra={"fields": {"session_id": self._caller.session_id, "error": str(exc)}},
            )
            return None
        self.problem = None
        return headers

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        await request.aread()
        headers = await self._headers(None) or {}
        request.headers.update(headers)
        response = yield request
        if response.status_code != 401 or not headers:
            return
        again = await self._headers(headers)
        if not again or again == headers:
            return
        request.headers.update(again)
        response = yield request
        if response.status_code < 400:
            self._recovered()  # the refused attempt is not the connection's state
