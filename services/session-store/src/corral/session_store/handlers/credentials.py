"""credentials.get / list / save / delete: the public parts of vault credentials.

Secrets never come here: the credential-proxy writes them to OpenBao and then asks ``save`` with the
credential's public parts (``corral.contracts.api.vaults.Credential``), or removes them and then asks
``delete``. A credential belongs to one vault; one asked for under another vault is not found.
"""

from __future__ import annotations

from typing import Any

from corral.contracts import ids, subjects
from corral.contracts.api.errors import invalid, not_found
from corral.contracts.api.vaults import Credential
from corral.contracts.clock import now_rfc3339
from corral.contracts.log import CredentialDeleted, CredentialSaved
from corral.contracts.rpc import CredentialRef, Deleted, ListObjects, Page, SaveCredential
from corral.session_store import pgtext, queries
from corral.session_store.handlers import vaults
from corral.session_store.service import Deps


async def load(deps: Deps, workspace_id: str | None, vault_id: str, credential_id: str) -> tuple[Credential, str, int]:
    row = await deps.pool.fetchrow(
        "SELECT workspace_id, vault_id, log_seq, body FROM vault_credentials WHERE credential_id = $1", credential_id
    )
    if row is None or row["vault_id"] != vault_id or (workspace_id is not None and row["workspace_id"] != workspace_id):
        await vaults.load(deps, workspace_id, vault_id)  # a missing vault is named as such
        raise not_found("credential", credential_id)
    return Credential.model_validate(pgtext.load(row["body"])), row["workspace_id"], row["log_seq"]


async def get(deps: Deps, req: CredentialRef) -> dict[str, Any]:
    credential, _, _ = await load(deps, req.workspace_id, req.vault_id, req.id)
    return credential.model_dump(mode="json")


async def save(deps: Deps, req: SaveCredential) -> dict[str, Any]:
    credential = Credential.model_validate(req.credential)
    if not ids.has_prefix(credential.id, ids.CREDENTIAL):
        raise invalid(f"credential.id: {credential.id!r} is not a credential id")
    if req.create:
        vault, workspace, _ = await vaults.load(deps, req.workspace_id, credential.vault_id)
        if vault.archived_at is not None:
            raise invalid(
                f"vault {vault.id!r} is archived; credentials cannot be added to it", error_code="vault_archived"
            )
        expected = 0
    else:
        _, workspace, expected = await load(deps, req.workspace_id, credential.vault_id, credential.id)
    record = CredentialSaved(workspace_id=workspace, credential=credential)
    seq = await deps.catalog.append(
        subjects.credential_log(credential.id), record.model_dump(mode="json"), expected_last_seq=expected
    )
    await deps.settle_catalog_write(seq)
    return credential.model_dump(mode="json")


async def delete(deps: Deps, req: CredentialRef) -> Deleted:
    _, workspace, seq = await load(deps, req.workspace_id, req.vault_id, req.id)
    record = CredentialDeleted(
        workspace_id=workspace, vault_id=req.vault_id, credential_id=req.id, deleted_at=now_rfc3339()
    )
    new_seq = await deps.catalog.append(
        subjects.credential_log(req.id), record.model_dump(mode="json"), expected_last_seq=seq
    )
    await deps.settle_catalog_write(new_seq)
    return Deleted(id=req.id, type="vault_credential_deleted")


async def list_(deps: Deps, req: ListObjects) -> Page:
    assert req.workspace_id is not None
    if req.vault_id is None:
        raise invalid("vault_id: required")
    await vaults.load(deps, req.workspace_id, req.vault_id)
    async with deps.pool.acquire() as conn:
        rows, next_page, _ = await queries.page_by_created(
            conn,
            table="vault_credentials",
            id_column="credential_id",
            workspace_id=req.workspace_id,
            params=req,
            order="asc",
            extra=["vault_id = $2"],
            extra_args=[req.vault_id],
        )
    return Page(data=[pgtext.load(r["body"]) for r in rows], next_page=next_page)
