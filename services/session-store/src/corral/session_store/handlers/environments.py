"""environments.create / get / update / list / archive / delete."""

from __future__ import annotations

from typing import Any

import asyncpg

from corral.contracts import ids, subjects
from corral.contracts.api.environments import Environment, EnvironmentCreateParams, EnvironmentUpdateParams
from corral.contracts.api.errors import conflict, not_found
from corral.contracts.clock import now_rfc3339
from corral.contracts.log import EnvironmentDeleted, EnvironmentSaved
from corral.contracts.rpc import CreateObject, Deleted, GetObject, ListObjects, ObjectAction, Page, UpdateObject
from corral.session_store import pgtext, queries
from corral.session_store.domain.environments import create_environment, update_environment
from corral.session_store.service import Deps


async def load(deps: Deps, workspace_id: str | None, environment_id: str) -> tuple[Environment, str, int]:
    subject = subjects.environment_log(environment_id)
    entry = deps.environments.get(subject)
    if entry is not None:
        owner, env = entry.value
        seq = entry.seq
    else:
        row = await deps.pool.fetchrow(
            "SELECT workspace_id, log_seq, body FROM environments WHERE environment_id = $1", environment_id
        )
        if row is None:
            raise not_found("environment", environment_id)
        owner, seq = row["workspace_id"], row["log_seq"]
        env = Environment.model_validate(pgtext.load(row["body"]))
        deps.environments.put(subject, seq, (owner, env))
    if workspace_id is not None and owner != workspace_id:
        raise not_found("environment", environment_id)
    return env, owner, seq


async def _name_taken(pool: asyncpg.Pool, workspace_id: str, name: str, except_id: str | None = None) -> bool:
    found = await pool.fetchval(
        "SELECT environment_id FROM environments WHERE workspace_id = $1 AND name = $2", workspace_id, pgtext.key(name)
    )
    return found is not None and found != except_id


async def _save(deps: Deps, workspace_id: str, env: Environment, expected: int | None) -> dict[str, Any]:
    record = EnvironmentSaved(workspace_id=workspace_id, environment=env)
    seq = await deps.catalog.append(
        subjects.environment_log(env.id), record.model_dump(mode="json"), expected_last_seq=expected
    )
    await deps.settle_catalog_write(seq)
    return env.model_dump(mode="json")


def _duplicate(name: str) -> Exception:
    return conflict(
        f"an environment named {name!r} already exists; names are unique", error_code="environment_name_taken"
    )


async def create(deps: Deps, req: CreateObject) -> dict[str, Any]:
    assert req.workspace_id is not None
    params = EnvironmentCreateParams.model_validate(req.params)
    if await _name_taken(deps.pool, req.workspace_id, params.name):
        raise _duplicate(params.name)
    env = create_environment(params, environment_id=ids.new_id(ids.ENVIRONMENT), now=now_rfc3339())
    return await _save(deps, req.workspace_id, env, expected=0)


async def get(deps: Deps, req: GetObject) -> dict[str, Any]:
    env, _, _ = await load(deps, req.workspace_id, req.id)
    return env.model_dump(mode="json")


async def update(deps: Deps, req: UpdateObject) -> dict[str, Any]:
    current, workspace, seq = await load(deps, req.workspace_id, req.id)
    params = EnvironmentUpdateParams.model_validate(req.params)
    updated = update_environment(current, params, sent=set(req.params), now=now_rfc3339())
    if updated is None:
        return current.model_dump(mode="json")
    if updated.name != current.name and await _name_taken(deps.pool, workspace, updated.name, except_id=current.id):
        raise _duplicate(updated.name)
    return await _save(deps, workspace, updated, expected=seq)


async def archive(deps: Deps, req: ObjectAction) -> dict[str, Any]:
    current, workspace, seq = await load(deps, req.workspace_id, req.id)
    if current.archived_at is not None:
        return current.model_dump(mode="json")
    at = now_rfc3339()
    return await _save(deps, workspace, current.model_copy(update={"archived_at": at, "updated_at": at}), expected=seq)


async def delete(deps: Deps, req: ObjectAction) -> Deleted:
    _, workspace, seq = await load(deps, req.workspace_id, req.id)
    record = EnvironmentDeleted(workspace_id=workspace, environment_id=req.id, deleted_at=now_rfc3339())
    new_seq = await deps.catalog.append(
        subjects.environment_log(req.id), record.model_dump(mode="json"), expected_last_seq=seq
    )
    await deps.settle_catalog_write(new_seq)
    return Deleted(id=req.id, type="environment_deleted")


async def list_(deps: Deps, req: ListObjects) -> Page:
    assert req.workspace_id is not None
    async with deps.pool.acquire() as conn:
        rows, next_page, _ = await queries.page_by_created(
            conn,
            table="environments",
            id_column="environment_id",
            workspace_id=req.workspace_id,
            params=req,
            order="asc",
        )
    return Page(data=[pgtext.load(r["body"]) for r in rows], next_page=next_page)
