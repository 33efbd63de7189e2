"""A session's vault credentials: which one applies to an MCP server or an outbound host, with its secret.

Every lookup names the session's **workspace** (the harness knows it from the session's log): vaults
are read with ``vaults.get`` / ``credentials.list`` scoped to that workspace, and secrets from that
workspace's OpenBao paths, so another workspace's vault is never used, whatever ``vault_ids`` says.
A vault that is gone or archived is skipped, as are archived credentials (their secrets are gone).

**MCP servers** (``mcp_headers``): the ``static_bearer`` or ``mcp_oauth`` credential whose
``mcp_server_url`` covers the server URL (``credential_match``) gives ``Authorization: Bearer <token>``;
none gives no header. An ``mcp_oauth`` token that has expired (``expires_at`` within
``REFRESH_MARGIN`` of now) or that the caller reports refused (``rejected``: the headers the server
answered 401 to) is refreshed first (``oauth_refresh``); a refresh that fails raises ``RefreshFailed``.

**Outbound hosts** (``environment_credentials``): the ``environment_variable`` credentials whose
``networking`` admits the host, with their values, for injection at egress.

The public listing and the secrets read are cached per session for ``ttl_s`` (a refresh updates the
cache at once; ``forget`` drops a session's). Values are held in fields excluded from ``repr`` and
are never logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from corral.contracts.api.errors import ApiError
from corral.contracts.api.vaults import Credential, Vault
from corral.contracts.clock import now, parse_rfc3339
from corral.contracts.rpc import GetObject, ListObjects, StoreOps
from corral.credential_proxy.credential_match import best_mcp_match, host_allowed
from corral.credential_proxy.credentials import StoreCall
from corral.credential_proxy.mcp_auth import Caller, CredentialUnusable
from corral.credential_proxy.oauth_refresh import Refresher, RefreshFailed
from corral.credential_proxy.secret_store import SecretStore, SecretStoreUnavailable, credential_path

#: An access token this close to its ``expires_at`` is refreshed before it is used.
REFRESH_MARGIN: Final = timedelta(seconds=30)
MCP_TYPES: Final = ("static_bearer", "mcp_oauth")


@dataclass(frozen=True)
class EnvironmentCredential:
    credential_id: str
    vault_id: str
    secret_name: str
    value: str = field(repr=False)
    header: bool
    body: bool


@dataclass
class _Cached:
    expires: float
    credentials: list[Credential]
    secrets: dict[str, dict[str, str] | None] = field(default_factory=dict, repr=False)


@dataclass
class SessionCredentials:
    secrets: SecretStore
    store: StoreCall
    refresher: Refresher
    ttl_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _cache: dict[tuple[str, str, tuple[str, ...]], _Cached] = field(default_factory=dict, repr=False)

    def forget(self, session_id: str) -> None:
        for key in [k for k in self._cache if k[1] == session_id]:
            del self._cache[key]

    async def mcp_headers(
        self,
        workspace_id: str,
        session_id: str,
        vault_ids: tuple[str, ...],
        url: str,
        *,
        rejected: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The headers that authenticate the session to the MCP server at ``url`` (``{}`` for none).

        Raises:
            RefreshFailed: the matching ``mcp_oauth`` token needed a refresh and it failed.
            SecretStoreUnavailable: OpenBao cannot be used right now.
        """
        cached = await self._load(workspace_id, session_id, vault_ids)
        candidates = [
            (str(c.auth.get("mcp_server_url")), c) for c in cached.credentials if c.auth.get("type") in MCP_TYPES
        ]
        credential: Credential | None = best_mcp_match(url, candidates)
        if credential is None:
            return {}
        secret = await self._secret(cached, workspace_id, credential)
        if secret is None:
            return {}
        if credential.auth.get("type") == "static_bearer":
            return {"Authorization": f"Bearer {secret.get('token', '')}"}
        token = secret.get("access_token", "")
        refused = rejected is not None and rejected.get("Authorization") == f"Bearer {token}"
        expires = credential.auth.get("expires_at")
        expired = isinstance(expires, str) and parse_rfc3339(expires) <= now() + REFRESH_MARGIN
        if (refused or expired) and credential.auth.get("refresh"):
            refreshed = await self.refresher.refresh(workspace_id, credential.vault_id, credential.id, stale=token)
            token = refreshed.access_token
            cached.secrets[credential.id] = {**secret, "access_token": token}
            auth = {**credential.auth, "expires_at": refreshed.expires_at}
            cached.credentials = [
                c.model_copy(update={"auth": auth}) if c.id == credential.id else c for c in cached.credentials
            ]
        return {"Authorization": f"Bearer {token}"}

    async def environment_names(
        self, workspace_id: str, session_id: str, vault_ids: tuple[str, ...]
    ) -> list[tuple[str, str]]:
        """``(credential_id, secret_name)`` of the session's ``environment_variable`` credentials, in
        vault order (no secret is read)."""
        cached = await self._load(workspace_id, session_id, vault_ids)
        return [
            (c.id, str(c.auth.get("secret_name")))
            for c in cached.credentials
            if c.auth.get("type") == "environment_variable" and c.auth.get("secret_name")
        ]

    async def environment_bound(
        self, workspace_id: str, session_id: str, vault_ids: tuple[str, ...], host: str
    ) -> list[tuple[str, str]]:
        """``(credential_id, vault_id)`` of the session's ``environment_variable`` credentials bound to
        ``host``, in vault order (no secret is read)."""
        cached = await self._load(workspace_id, session_id, vault_ids)
        return [
            (c.id, c.vault_id)
            for c in cached.credentials
            if c.auth.get("type") == "environment_variable" and host_allowed(c.auth.get("networking") or {}, host)
        ]

    async def environment_credentials(
        self, workspace_id: str, session_id: str, vault_ids: tuple[str, ...], host: str
    ) -> list[EnvironmentCredential]:
        """The session's ``environment_variable`` credentials that may be sent to ``host``, in vault order."""
        cached = await self._load(workspace_id, session_id, vault_ids)
        found: list[EnvironmentCredential] = []
        for credential in cached.credentials:
            auth = credential.auth
            if auth.get("type") != "environment_variable" or not host_allowed(auth.get("networking") or {}, host):
                continue
            secret = await self._secret(cached, workspace_id, credential)
            if secret is None or "secret_value" not in secret:
                continue
            location = auth.get("injection_location") or {}
            found.append(
                EnvironmentCredential(
                    credential_id=credential.id,
                    vault_id=credential.vault_id,
                    secret_name=str(auth.get("secret_name")),
                    value=secret["secret_value"],
                    header=bool(location.get("header", True)),
                    body=bool(location.get("body", False)),
                )
            )
        return found

    async def _load(self, workspace_id: str, session_id: str, vault_ids: tuple[str, ...]) -> _Cached:
        key = (workspace_id, session_id, vault_ids)
        at = self.clock()
        for stale in [k for k, v in self._cache.items() if v.expires <= at]:
            del self._cache[stale]
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        credentials: list[Credential] = []
        for vault_id in dict.fromkeys(vault_ids):
            credentials += await self._vault_credentials(workspace_id, vault_id)
        cached = self._cache[key] = _Cached(expires=at + self.ttl_s, credentials=credentials)
        return cached

    async def _vault_credentials(self, workspace_id: str, vault_id: str) -> list[Credential]:
        try:
            vault = Vault.model_validate(
                await self.store(StoreOps.VAULTS_GET, GetObject(workspace_id=workspace_id, id=vault_id))
            )
        except ApiError as exc:
            if exc.error_type == "not_found_error":
                return []  # deleted since the session was created, or never this workspace's
            raise
        if vault.archived_at is not None:
            return []
        found: list[Credential] = []
        page: str | None = None
        while True:
            listing = ListObjects(workspace_id=workspace_id, vault_id=vault.id, limit=100, page=page)
            result = await self.store(StoreOps.CREDENTIALS_LIST, listing)
            found += [Credential.model_validate(item) for item in result.data]
            page = result.next_page
            if page is None:
                return [c for c in found if c.archived_at is None]

    async def _secret(self, cached: _Cached, workspace_id: str, credential: Credential) -> dict[str, str] | None:
        if credential.id not in cached.secrets:
            path = credential_path(workspace_id, credential.vault_id, credential.id)
            cached.secrets[credential.id] = await self.secrets.read(path)
        return cached.secrets[credential.id]


@dataclass(frozen=True)
class McpCredentials:
    """The MCP client's ``Credentials`` seam, answered from the session's vaults."""

    resolver: SessionCredentials

    async def headers(self, caller: Caller, url: str, *, rejected: Mapping[str, str] | None = None) -> dict[str, str]:
        try:
            return await self.resolver.mcp_headers(
                caller.workspace_id, caller.session_id, caller.vault_ids, url, rejected=rejected
            )
        except RefreshFailed as exc:
            raise CredentialUnusable(str(exc)) from None
        except SecretStoreUnavailable as exc:
            raise CredentialUnusable(f"the session's credentials cannot be read: {exc}; retry shortly") from None
        except ApiError as exc:
            raise CredentialUnusable(f"the session's vaults cannot be read: {exc.message}") from None
