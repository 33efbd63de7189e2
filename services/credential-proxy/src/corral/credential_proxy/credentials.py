"""Vault credentials: the secret parts to OpenBao, the public parts to the catalog, in an order that
never leaves a half-written credential (see ``corral.contracts.credentials``).

The session-store is asked for the vault and the credential's public parts (``StoreOps``), always
scoped to the caller's workspace, before any secret is written or removed: another workspace's vault
is a 404 and nothing is touched.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from corral.contracts import ids
from corral.contracts.api.base import apply_metadata_patch
from corral.contracts.api.errors import ApiError, invalid
from corral.contracts.api.vaults import (
    Credential,
    CredentialCreateParams,
    CredentialUpdateParams,
    CredentialValidation,
    RefreshOutcome,
    Vault,
    check_secret_size,
)
from corral.contracts.clock import now, parse_rfc3339, rfc3339
from corral.contracts.credentials import CreateCredential, CredentialAction, DeleteVault, UpdateCredential
from corral.contracts.operation import Operation
from corral.contracts.rpc import CredentialRef, Deleted, GetObject, ListObjects, ObjectAction, SaveCredential, StoreOps
from corral.credential_proxy.credential_auth import create_auth, update_auth
from corral.credential_proxy.secret_store import SecretStore, credential_path, vault_path

logger = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep")

StoreCall = Callable[[Operation[Any, Any], BaseModel], Awaitable[Any]]
"""``Bus.call`` bound to the session-store's deadline (raises ``ApiError`` for its error replies)."""


@dataclass(frozen=True)
class Credentials:
    secrets: SecretStore
    store: StoreCall

    async def _vault(self, workspace_id: str, vault_id: str) -> Vault:
        found = await self.store(StoreOps.VAULTS_GET, GetObject(workspace_id=workspace_id, id=vault_id))
        return Vault.model_validate(found)

    async def _credential(self, workspace_id: str, vault_id: str, credential_id: str) -> Credential:
        ref = CredentialRef(workspace_id=workspace_id, vault_id=vault_id, id=credential_id)
        return Credential.model_validate(await self.store(StoreOps.CREDENTIALS_GET, ref))

    async def _save(self, workspace_id: str, credential: Credential, *, create: bool) -> dict[str, Any]:
        save = SaveCredential(workspace_id=workspace_id, credential=credential.model_dump(mode="json"), create=create)
        result: dict[str, Any] = await self.store(StoreOps.CREDENTIALS_SAVE, save)
        return result

    async def create(self, req: CreateCredential) -> dict[str, Any]:
        params = CredentialCreateParams.model_validate(req.params)
        check_secret_size(params.auth)
        vault = await self._vault(req.workspace_id, req.vault_id)
        if vault.archived_at is not None:
            raise invalid(
                f"vault {vault.id!r} is archived; credentials cannot be added to it", error_code="vault_archived"
            )
        at = now()
        public, secret = create_auth(params.auth, now=at)
        credential = Credential(
            id=ids.new_id(ids.CREDENTIAL),
            vault_id=vault.id,
            display_name=params.display_name,
            auth=public,
            metadata=dict(params.metadata or {}),
            created_at=rfc3339(at),
            updated_at=rfc3339(at),
        )
        path = credential_path(req.workspace_id, vault.id, credential.id)
        await self.secrets.write(path, secret)
        try:
            return await self._save(req.workspace_id, credential, create=True)
        except BaseException:
            await self._undo(self.secrets.delete(path), credential.id)
            raise

    async def update(self, req: UpdateCredential) -> dict[str, Any]:
        params = CredentialUpdateParams.model_validate(req.params)
        check_secret_size(params.auth)
        current = await self._credential(req.workspace_id, req.vault_id, req.id)
        if current.archived_at is not None:
            raise invalid(
                f"credential {current.id!r} is archived and can no longer be updated; create a new credential",
                error_code="credential_archived",
            )
        data = current.model_dump(mode="json")
        path = credential_path(req.workspace_id, req.vault_id, req.id)
        old_secret: dict[str, str] | None = None
        new_secret: dict[str, str] | None = None
        if params.auth is not None:
            old_secret = await self.secrets.read(path) or {}
            data["auth"], new_secret = update_auth(current.auth, old_secret, params.auth, now=now())
        if "display_name" in req.params:
            data["display_name"] = params.display_name
        if "metadata" in req.params:
            data["metadata"] = apply_metadata_patch(current.metadata, params.metadata or {})
        secret_changed = new_secret is not None and new_secret != old_secret
        if data == current.model_dump(mode="json") and not secret_changed:
            return data
        data["updated_at"] = rfc3339(now())
        if secret_changed and new_secret is not None:
            await self.secrets.write(path, new_secret)
        try:
            return await self._save(req.workspace_id, Credential.model_validate(data), create=False)
        except BaseException:
            if secret_changed and old_secret is not None:
                restore = self.secrets.write(path, old_secret) if old_secret else self.secrets.delete(path)
                await self._undo(restore, req.id)
            raise

    async def archive(self, req: CredentialAction) -> dict[str, Any]:
        """The secret is removed (an archived credential can never be used again); the metadata stays."""
        current = await self._credential(req.workspace_id, req.vault_id, req.id)
        if current.archived_at is not None:
            return current.model_dump(mode="json")
        await self.secrets.delete(credential_path(req.workspace_id, req.vault_id, req.id))
        at = rfc3339(now())
        return await self._save(
            req.workspace_id, current.model_copy(update={"archived_at": at, "updated_at": at}), create=False
        )

    async def delete(self, req: CredentialAction) -> Deleted:
        await self._credential(req.workspace_id, req.vault_id, req.id)
        await self.secrets.delete(credential_path(req.workspace_id, req.vault_id, req.id))
        ref = CredentialRef(workspace_id=req.workspace_id, vault_id=req.vault_id, id=req.id)
        deleted: Deleted = await self.store(StoreOps.CREDENTIALS_DELETE, ref)
        return deleted

    async def delete_vault(self, req: DeleteVault) -> Deleted:
        """Every credential's secret in the vault is removed (and anything else under the vault's
        path, such as a secret a crashed create left), then the vault's deletion is recorded."""
        vault = await self._vault(req.workspace_id, req.id)
        page: str | None = None
        while True:
            listing = ListObjects(
                workspace_id=req.workspace_id, vault_id=vault.id, include_archived=True, limit=100, page=page
            )
            found = await self.store(StoreOps.CREDENTIALS_LIST, listing)
            for item in found.data:
                await self.secrets.delete(credential_path(req.workspace_id, vault.id, str(item["id"])))
            page = found.next_page
            if page is None:
                break
        await self.secrets.delete_tree(vault_path(req.workspace_id, vault.id))
        deleted: Deleted = await self.store(
            StoreOps.VAULTS_DELETE, ObjectAction(workspace_id=req.workspace_id, id=vault.id)
        )
        return deleted

    async def validate(self, req: CredentialAction) -> dict[str, Any]:
        """``mcp_oauth_validate``, judged from what is stored; the MCP server is not probed.

        ``invalid``: archived, no access token stored, or the token has expired with no refresh token
        to renew it (``refresh.status: no_refresh_token``). ``unknown``: a token is stored and may
        work (it is live-probed once the credential-proxy connects to MCP servers).
        """
        current = await self._credential(req.workspace_id, req.vault_id, req.id)
        if current.auth.get("type") != "mcp_oauth":
            raise invalid(
                f"credential {current.id!r} is {current.auth.get('type')!r}; only mcp_oauth credentials can be "
                "validated with mcp_oauth_validate"
            )
        secret = None
        if current.archived_at is None:
            secret = await self.secrets.read(credential_path(req.workspace_id, req.vault_id, req.id))
        has_refresh = bool(secret and secret.get("refresh_token"))
        at = now()
        expires = current.auth.get("expires_at")
        expired = isinstance(expires, str) and parse_rfc3339(expires) <= at
        refresh = None
        status: Literal["valid", "invalid", "unknown"]
        if secret is None or not secret.get("access_token"):
            status = "invalid"
        elif expired and not has_refresh:
            status, refresh = "invalid", RefreshOutcome(status="no_refresh_token")
        else:
            status = "unknown"
        return CredentialValidation(
            credential_id=current.id,
            vault_id=current.vault_id,
            status=status,
            has_refresh_token=has_refresh,
            validated_at=rfc3339(at),
            refresh=refresh,
        ).model_dump(mode="json")

    async def _undo(self, undo: Awaitable[None], credential_id: str) -> None:
        try:
            await undo
        except (ApiError, Exception) as exc:  # the original failure is what the caller sees
            logger.error(
                "could not undo a credential's secret write",
                extra={"fields": {"credential_id": credential_id, "error": type(exc).__name__}},
            )
