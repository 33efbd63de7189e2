"""Refreshing an ``mcp_oauth`` credential's access token at its ``token_endpoint`` (RFC 6749 section 6).

``Refresher.refresh(..., stale=<the access token that expired or was refused>)``:

1. **Single flight.** One refresh per credential at a time (a lock per credential, in this process).
   Whoever holds it first reads the stored secret again: if its access token is no longer ``stale``,
   someone refreshed meanwhile and that token is returned without asking the endpoint. So callers
   that find the same token expired at once cause one request.
2. The credential's public parts are read in the caller's workspace (``credentials.get``): it must be
   ``mcp_oauth``, not archived, with a ``refresh`` configuration; its secret must hold a refresh token.
3. ``POST token_endpoint`` with ``grant_type=refresh_token``, the refresh token, and ``scope`` and
   ``resource`` when the credential has them; the client authenticates as its ``token_endpoint_auth``
   says: ``none`` sends ``client_id`` in the form; ``client_secret_basic`` sends
   ``Authorization: Basic base64(urlencode(client_id):urlencode(client_secret))``, each form-urlencoded
   (RFC 6749 2.3.1 and appendix B: a space is ``+``);
   ``client_secret_post`` sends ``client_id`` and ``client_secret`` in the form. The endpoint is
   reached under the destination rules (``token_endpoint``).
4. The answer must be HTTP 200 with a JSON object holding a non-empty string ``access_token``, a
   ``token_type`` of ``Bearer`` (any case) if present, a positive number ``expires_in`` if present and
   a string ``refresh_token`` if present. Anything else (an error status, HTML, JSON of another shape)
   is ``RefreshFailed`` naming the credential, the endpoint, the status and the OAuth ``error`` code if
   the answer gave one, never a value; and **nothing is written**.
5. The credential is read again (archived or deleted meanwhile: nothing is written, ``RefreshFailed``).
   The new secret document (new access token, the rotated refresh token if the endpoint sent one, the
   client secret kept) is written to OpenBao as one version, then the new public ``expires_at`` (now +
   ``expires_in``; ``null`` when the endpoint gave none) is recorded through ``credentials.save``. If
   that record fails, the new token stays in OpenBao (the old refresh token may already be spent) and
   the failure is logged: the catalog's ``expires_at`` is then stale, which costs at most an early
   refresh.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

from corral.contracts.api.errors import ApiError
from corral.contracts.api.vaults import SECRET_MAX_BYTES, Credential, secret_size
from corral.contracts.clock import now, rfc3339
from corral.contracts.rpc import CredentialRef, SaveCredential, StoreOps
from corral.credential_proxy.credentials import StoreCall
from corral.credential_proxy.secret_store import SecretStore, credential_path
from corral.credential_proxy.token_endpoint import EndpointUnusable, TokenEndpoint

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"^[\x21-\x7E]{1,16384}$")  # printable, no spaces: safe in an Authorization header
_OAUTH_ERROR = re.compile(r"^[\x20-\x21\x23-\x5B\x5D-\x7E]{1,64}$")  # RFC 6749 5.2 ``error`` characters


class RefreshFailed(Exception):
    """The access token could not be refreshed; the message names the credential and what to do."""

    def __init__(self, credential_id: str, message: str) -> None:
        super().__init__(message)
        self.credential_id = credential_id


@dataclass(frozen=True)
class Refreshed:
    access_token: str = field(repr=False)
    expires_at: str | None


@dataclass
class Refresher:
    secrets: SecretStore
    store: StoreCall
    endpoint: TokenEndpoint
    _locks: dict[tuple[str, str, str], tuple[asyncio.Lock, int]] = field(default_factory=dict)

    def waiting(self, workspace_id: str, vault_id: str, credential_id: str) -> int:
        """How many refreshes of this credential are running or waiting for the one running."""
        return self._locks.get((workspace_id, vault_id, credential_id), (None, 0))[1]

    async def refresh(self, workspace_id: str, vault_id: str, credential_id: str, *, stale: str) -> Refreshed:
        """A live access token for the credential, refreshed if the stored one is still ``stale``.

        Raises:
            RefreshFailed: the credential cannot be refreshed or the endpoint refused or answered garbage.
            SecretStoreUnavailable: OpenBao cannot be used right now.
        """
        key = (workspace_id, vault_id, credential_id)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                return await self._refresh(workspace_id, vault_id, credential_id, stale)
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _credential(self, workspace_id: str, vault_id: str, credential_id: str) -> Credential:
        ref = CredentialRef(workspace_id=workspace_id, vault_id=vault_id, id=credential_id)
        try:
            credential = Credential.model_validate(await self.store(StoreOps.CREDENTIALS_GET, ref))
        except ApiError as exc:
            if exc.error_type == "not_found_error":
                raise RefreshFailed(credential_id, f"credential {credential_id!r} no longer exists") from None
            raise
        if credential.archived_at is not None:
            raise RefreshFailed(credential_id, f"credential {credential_id!r} is archived")
        return credential

    async def _refresh(self, workspace_id: str, vault_id: str, credential_id: str, stale: str) -> Refreshed:
        path = credential_path(workspace_id, vault_id, credential_id)
        credential = await self._credential(workspace_id, vault_id, credential_id)
        secret = await self.secrets.read(path)
        if secret is None:
            raise RefreshFailed(credential_id, f"credential {credential_id!r} has no stored secret")
        current = secret.get("access_token", "")
        if current and current != stale:
            return Refreshed(access_token=current, expires_at=credential.auth.get("expires_at"))
        refresh = credential.auth.get("refresh")
        if credential.auth.get("type") != "mcp_oauth" or not isinstance(refresh, dict):
            raise RefreshFailed(
                credential_id,
                f"credential {credential_id!r}'s access token has expired or was refused and it has no refresh "
                "configuration; update the credential with a new access_token",
            )
        refresh_token = secret.get("refresh_token")
        if not refresh_token:
            raise RefreshFailed(
                credential_id,
                f"credential {credential_id!r} has no refresh token stored; update it with a new access_token or "
                "refresh.refresh_token",
            )
        endpoint = str(refresh["token_endpoint"])
        form, headers = _client_auth(credential_id, refresh, secret)
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **form}
        for name in ("scope", "resource"):
            if refresh.get(name):
                form[name] = str(refresh[name])
        try:
            answer = await self.endpoint.post(endpoint, form, headers)
        except EndpointUnusable as exc:
            raise RefreshFailed(credential_id, f"refreshing credential {credential_id!r} failed: {exc}") from None
        at = now()
        token, rotated, expires_at = _parse(credential_id, endpoint, answer.status, answer.body, at)
        new_secret = dict(secret)
        new_secret["access_token"] = token
        if rotated:
            new_secret["refresh_token"] = rotated
        if secret_size(dict(new_secret)) > SECRET_MAX_BYTES:
            raise RefreshFailed(
                credential_id,
                f"the token endpoint {endpoint} answered tokens larger than the {SECRET_MAX_BYTES} bytes a "
                "credential may hold",
            )
        credential = await self._credential(workspace_id, vault_id, credential_id)  # archived meanwhile?
        await self.secrets.write(path, new_secret)
        logger.info(
            "mcp_oauth access token refreshed",
            extra={"fields": {"credential_id": credential_id, "vault_id": vault_id, "rotated": bool(rotated)}},
        )
        auth = {**credential.auth, "expires_at": expires_at}
        saved = credential.model_copy(update={"auth": auth, "updated_at": rfc3339(at)})
        try:
            await self.store(
                StoreOps.CREDENTIALS_SAVE,
                SaveCredential(workspace_id=workspace_id, credential=saved.model_dump(mode="json"), create=False),
            )
        except (ApiError, TimeoutError) as exc:
            logger.warning(
                "refreshed token stored, but its expires_at could not be recorded",
                extra={"fields": {"credential_id": credential_id, "error": type(exc).__name__}},
            )
        return Refreshed(access_token=token, expires_at=expires_at)


def _client_auth(
    credential_id: str, refresh: dict[str, Any], secret: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The form fields and headers that authenticate the client, as its ``token_endpoint_auth`` says."""
    client_id = str(refresh.get("client_id") or "")
    kind = (refresh.get("token_endpoint_auth") or {}).get("type")
    if kind == "none":
        return {"client_id": client_id}, {}
    client_secret = secret.get("client_secret")
    if kind in ("client_secret_basic", "client_secret_post") and not client_secret:
        raise RefreshFailed(
            credential_id,
            f"credential {credential_id!r} uses {kind} but has no client secret stored; update its "
            "refresh.token_endpoint_auth.client_secret",
        )
    assert client_secret is not None or kind not in ("client_secret_basic", "client_secret_post")
    if kind == "client_secret_basic":
        pair = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret or '', safe='')}"
        return {}, {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    if kind == "client_secret_post":
        return {"client_id": client_id, "client_secret": client_secret or ""}, {}
    raise RefreshFailed(credential_id, f"credential {credential_id!r} has an unknown token_endpoint_auth {kind!r}")


def _parse(
    credential_id: str, endpoint: str, status: int, body: bytes, at: datetime
) -> tuple[str, str | None, str | None]:
    """(access token, rotated refresh token or ``None``, new ``expires_at`` or ``None``) from the answer."""
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        document = None
    if status != 200:
        code = document.get("error") if isinstance(document, dict) else None
        said = f" ({code})" if isinstance(code, str) and _OAUTH_ERROR.fullmatch(code) else ""
        raise RefreshFailed(
            credential_id,
            f"the token endpoint {endpoint} refused to refresh credential {credential_id!r}: HTTP {status}{said}; "
            "update the credential with a new access_token or refresh.refresh_token",
        )

    def garbage(why: str) -> RefreshFailed:
        return RefreshFailed(
            credential_id,
            f"the token endpoint {endpoint} answered credential {credential_id!r}'s refresh with something that is "
            f"not an OAuth token response ({why}); check the credential's refresh.token_endpoint",
        )

    if not isinstance(document, dict):
        raise garbage("not a JSON object")
    token = document.get("access_token")
    if not isinstance(token, str) or not token:
        raise garbage("no access_token")
    if not _TOKEN.fullmatch(token):
        raise garbage("access_token is not printable text without spaces")
    token_type = document.get("token_type")
    if token_type is not None and (not isinstance(token_type, str) or token_type.lower() != "bearer"):
        raise garbage("token_type is not Bearer")
    rotated = document.get("refresh_token")
    if rotated is not None and (not isinstance(rotated, str) or not _TOKEN.fullmatch(rotated)):
        raise garbage("refresh_token is not printable text without spaces")
    expires_in = document.get("expires_in")
    expires_at: str | None = None
    if expires_in is not None:
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not 0 < expires_in < 10**9:
            raise garbage("expires_in is not a positive number of seconds")
        expires_at = rfc3339(at + timedelta(seconds=float(expires_in)))
    return token, rotated, expires_at
