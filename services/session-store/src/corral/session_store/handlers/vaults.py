"""vaults.create / get / update / list / archive / delete (the public parts only; secrets are in OpenBao).

``vaults.delete`` is asked by the credential-proxy once the secrets of the vault's credentials are
gone from OpenBao; the gateway never asks it directly.
"""

from __future__ import annotations

from typing import Any

from corral.contracts import ids, subjects
from corral.contracts.api.base import apply_metadata_patch
from corral.contracts.api.errors import ApiError, invalid, not_found
from corral.contracts.api.vaults import Vault, VaultCreateParams, VaultUpdateParams
from corral.contracts.clock import now_rfc3339
from corral.contracts.log import VaultDeleted, VaultSaved
from corral.contracts.rpc import CreateObject, Deleted, GetObject, ListObjects, ObjectAction, Page, UpdateObject
from corral.session_store import pgtext, queries
from corral.session_store.service import Deps


async def load(deps: Deps, workspace_id: str | None, vault_id: str) -> tuple[Vault, str, int]:
    row = await deps.pool.fetchrow("SELECT workspace_id, log_seq, body FROM vaults WHERE vault_id = $1", vault_id)
    if row is None or (workspace_id is not None and row["workspace_id"] != workspace_id):
        raise not_found("vault", vault_id)
    return Vault.model_validate(pgtext.load(row["body"])), row["workspace_id"], row["log_seq"]


async def attachable(deps: Deps, workspace_id: str, vault_ids: list[str]) -> list[str]:
    """``vault_ids`` of a new session, checked: each names a vault of ``workspace_id`` that is not archived.

    Listed twice is listed once (the first place kept). Raises the API error naming the first vault
    that is missing (404 ``vault_not_found``: another workspace's vault is missing too) or archived
    (400 ``vault_archived``).
    """
    wanted = list(dict.fromkeys(vault_ids))
    if not wanted:
        return []
    rows = await deps.pool.fetch(
        "SELECT vault_id, body FROM vaults WHERE vault_id = ANY($1::text[]) AND workspace_id = $2", wanted, workspace_id
    )
    found = {row["vault_id"]: Vault.model_validate(pgtext.load(row["body"])) for row in rows}
    for i, vault_id in enumerate(vault_ids):
        vault = found.get(vault_id)
        if vault is None:
            raise ApiError(
                "not_found_error",
                f"vault_ids[{i}]: vault {vault_id!r} was not found in this workspace; create it with "
                "client.beta.vaults.create, or remove it from vault_ids",
                error_code="vault_not_found",
            )
        if vault.archived_at is not None:
            raise invalid(
                f"vault_ids[{i}]: vault {vault_id!r} is archived and cannot be attached to a new session; "
                "attach a vault that is not archived, or remove it from vault_ids",
                error_code="vault_archived",
            )
    return wanted


async def _save(deps: Deps, workspace_id: str, vault: Vault, expected: int) -> dict[str, Any]:
    record = VaultSaved(workspace_id=workspace_id, vault=vault)
    seq = await deps.catalog.append(
        subjects.vault_log(vault.id), record.model_dump(mode="json"), expected_last_seq=expected
    )
    await deps.settle_catalog_write(seq)
    return vault.model_dump(mode="json")


async def create(deps: Deps, req: CreateObject) -> dict[str, Any]:
    assert req.workspace_id is not None
    params = VaultCreateParams.model_validate(req.params)
    now = now_rfc3339()
    vault = Vault(
        id=ids.new_id(ids.VAULT),
        display_name=params.display_name,
        metadata=dict(params.metadata or {}),
        created_at=now,
        updated_at=now,
    )
    return await _save(deps, req.workspace_id, vault, expected=0)


async def get(deps: Deps, req: GetObject) -> dict[str, Any]:
    vault, _, _ = await load(deps, req.workspace_id, req.id)
    return vault.model_dump(mode="json")


async def update(deps: Deps, req: UpdateObject) -> dict[str, Any]:
    current, workspace, seq = await load(deps, req.workspace_id, req.id)
    params = VaultUpdateParams.model_validate(req.params)
    if current.archived_at is not None:
        raise invalid(
            f"vault {current.id!r} is archived and can no longer be updated; create a new vault",
            error_code="vault_archived",
        )
    data = current.model_dump(mode="json")
    if "display_name" in req.params:
        if params.display_name is None:
            raise invalid("display_name: cannot be cleared")
        data["display_name"] = params.display_name
    if "metadata" in req.params:
        data["metadata"] = apply_metadata_patch(current.metadata, params.metadata or {})
    if data == current.model_dump(mode="json"):
        return data
    data["updated_at"] = now_rfc3339()
    return await _save(deps, workspace, Vault.model_validate(data), expected=seq)


async def archive(deps: Deps, req: ObjectAction) -> dict[str, Any]:
    current, workspace, seq = await load(deps, req.workspace_id, req.id)
    if current.archived_at is not None:
        return current.model_dump(mode="json")
    at = now_rfc3339()
    return await _save(deps, workspace, current.model_copy(update={"archived_at": at, "updated_at": at}), expected=seq)


async def delete(deps: Deps, req: ObjectAction) -> Deleted:
    _, workspace, seq = await load(deps, req.workspace_id, req.id)
    record = VaultDeleted(workspace_id=workspace, vault_id=req.id, deleted_at=now_rfc3339())
    new_seq = await deps.catalog.append(
        subjects.vault_log(req.id), record.model_dump(mode="json"), expected_last_seq=seq
    )
    await deps.settle_catalog_write(new_seq)
    return Deleted(id=req.id, type="vault_deleted")


async def list_(deps: Deps, req: ListObjects) -> Page:
    assert req.workspace_id is not None
    async with deps.pool.acquire() as conn:
        rows, next_page, _ = await queries.page_by_created(
            conn, table="vaults", id_column="vault_id", workspace_id=req.workspace_id, params=req, order="asc"
        )
    return Page(data=[pgtext.load(r["body"]) for r in rows], next_page=next_page)
