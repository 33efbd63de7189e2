"""apikeys.issue / get / update / list (the admin API; organisation-wide).

A key is recorded by its SHA-256 and a hint only: the gateway minted it and shows it to the client
once. An update is recorded as the key's mutable parts as they are now (``corral.api_key_updated``),
on the key's own catalog subject, fenced on its last record; every gateway follows these subjects,
so a key suspended (``inactive``) or revoked (``archived``) is refused by all of them at once.
Revocation is permanent: an archived key cannot be changed again.
"""

from __future__ import annotations

from typing import Any

from corral.contracts import ids, subjects
from corral.contracts.admin_rpc import AdminGet, AdminList, AdminPage, AdminUpdate, IssueApiKey
from corral.contracts.api.admin import ApiKey, ApiKeyCreateParams, ApiKeyUpdateParams, RateLimit
from corral.contracts.api.errors import invalid, not_found
from corral.contracts.clock import now_rfc3339
from corral.contracts.log import ApiKeyCreated, ApiKeyUpdated
from corral.session_store import queries
from corral.session_store.catalog_projection import api_key_of_row
from corral.session_store.service import Deps


async def _load(deps: Deps, key_id: str) -> tuple[ApiKey, int]:
    row = await deps.pool.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key_id)
    if row is None:
        raise not_found("api_key", key_id)
    seq = row["log_seq"] or await deps.bus.last_seq(subjects.CATALOG_STREAM, subjects.api_key_log(key_id))
    return api_key_of_row(row), seq


async def issue(deps: Deps, req: IssueApiKey) -> dict[str, Any]:
    params = ApiKeyCreateParams.model_validate(req.params)
    workspace = await deps.pool.fetchrow(
        "SELECT archived_at FROM workspaces WHERE workspace_id = $1", params.workspace_id
    )
    if workspace is None:
        raise not_found("workspace", params.workspace_id)
    if workspace["archived_at"] is not None:
        raise invalid(f"workspace {params.workspace_id!r} is archived; create keys in an active workspace")
    key_id = ids.new_id(ids.API_KEY)
    rate_limit = RateLimit.model_validate(params.rate_limit.model_dump()) if params.rate_limit else None
    record = ApiKeyCreated(
        workspace_id=params.workspace_id,
        key_id=key_id,
        key_sha256=req.key_sha256,
        name=params.name,
        created_at=now_rfc3339(),
        role=params.role,
        partial_key_hint=req.partial_key_hint,
        rate_limit=rate_limit,
    )
    seq = await deps.catalog.append(
        subjects.api_key_log(key_id), record.model_dump(mode="json"), expected_last_seq=0,
        msg_id=f"apikey:{req.key_sha256}",
    )  # fmt: skip
    await deps.settle_catalog_write(seq)
    key, _ = await _load(deps, key_id)
    return key.model_dump(mode="json")


async def get(deps: Deps, req: AdminGet) -> dict[str, Any]:
    key, _ = await _load(deps, req.id)
    return key.model_dump(mode="json")


async def _record(deps: Deps, key: ApiKey, seq: int) -> ApiKey:
    record = ApiKeyUpdated(
        workspace_id=key.workspace_id,
        key_id=key.id,
        name=key.name,
        status=key.status,
        rate_limit=key.rate_limit,
        updated_at=now_rfc3339(),
    )
    written = await deps.catalog.append(
        subjects.api_key_log(key.id), record.model_dump(mode="json"), expected_last_seq=seq
    )
    await deps.settle_catalog_write(written)
    return key


async def update(deps: Deps, req: AdminUpdate) -> dict[str, Any]:
    current, seq = await _load(deps, req.id)
    params = ApiKeyUpdateParams.model_validate(req.params)
    sent = params.model_fields_set
    changes: dict[str, Any] = {}
    if "name" in sent and params.name is not None:
        changes["name"] = params.name
    if "status" in sent and params.status is not None:
        changes["status"] = params.status
    if "rate_limit" in sent:
        changes["rate_limit"] = RateLimit.model_validate(params.rate_limit.model_dump()) if params.rate_limit else None
    updated = current.model_copy(update=changes)
    if updated == current:
        return current.model_dump(mode="json")
    if current.status == "archived":
        raise invalid(f"API key {current.id!r} is archived (revoked), which is permanent; create a new key instead")
    return (await _record(deps, updated, seq)).model_dump(mode="json")


async def list_(deps: Deps, req: AdminList) -> AdminPage:
    where: list[str] = []
    args: list[Any] = []
    if req.workspace_id is not None:
        args.append(req.workspace_id)
        where.append(f"workspace_id = ${len(args)}")
    if req.status is not None:
        args.append(req.status)
        where.append(f"status = ${len(args)}")
    rows, more = await queries.admin_page(
        deps.pool, table="api_keys", id_column="key_id", params=req, where=where, args=args
    )
    return queries.admin_page_of([api_key_of_row(r).model_dump(mode="json") for r in rows], more)


async def archive_all(deps: Deps, workspace_id: str) -> None:
    """Archive (revoke) every key of ``workspace_id`` not archived yet."""
    rows = await deps.pool.fetch(
        "SELECT * FROM api_keys WHERE workspace_id = $1 AND status <> 'archived' ORDER BY created_at", workspace_id
    )
    for row in rows:
        key, seq = await _load(deps, row["key_id"])
        await _record(deps, key.model_copy(update={"status": "archived"}), seq)
