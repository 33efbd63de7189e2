"""agents.create / get / update / list / archive / versions."""

from __future__ import annotations

from typing import Any

from corral.contracts import ids, subjects
from corral.contracts.api.agents import Agent, AgentCreateParams, AgentUpdateParams
from corral.contracts.api.errors import not_found
from corral.contracts.clock import now_rfc3339
from corral.contracts.log import AgentArchived, AgentSaved
from corral.contracts.rpc import CreateObject, GetObject, ListObjects, ObjectAction, Page, UpdateObject
from corral.session_store import pgtext, queries
from corral.session_store.domain import cursors
from corral.session_store.domain.agents import create_agent, update_agent
from corral.session_store.service import Deps


def _workspace(req_ws: str | None, row_ws: str) -> bool:
    return req_ws is None or req_ws == row_ws


async def load(deps: Deps, workspace_id: str | None, agent_id: str, version: int | None = None) -> tuple[Agent, int]:
    """The agent (latest or a given version) and its catalog subject's last sequence."""
    subject = subjects.agent_log(agent_id)
    entry = deps.agents.get(subject)
    if entry is None:
        row = await deps.pool.fetchrow("SELECT workspace_id, log_seq, body FROM agents WHERE agent_id = $1", agent_id)
        if row is None or not _workspace(workspace_id, row["workspace_id"]):
            raise not_found("agent", agent_id)
        current = Agent.model_validate(pgtext.load(row["body"]))
        owner, seq = row["workspace_id"], row["log_seq"]
        entry = deps.agents.put(subject, seq, (owner, current))
    else:
        seq, (owner, current) = entry.seq, entry.value
        if not _workspace(workspace_id, owner):
            raise not_found("agent", agent_id)
    if version is None or version == current.version:
        return current, seq
    known = entry.versions.get(version) if entry is not None else None
    if known is not None:
        return known[1], seq
    vrow = await deps.pool.fetchrow(
        "SELECT body FROM agent_versions WHERE agent_id = $1 AND version = $2", agent_id, version
    )
    if vrow is None:
        raise not_found("agent", f"{agent_id} version {version}")
    found = Agent.model_validate(pgtext.load(vrow["body"]))
    if entry is not None:
        entry.versions[version] = (owner, found)
    return found, seq


async def _save(deps: Deps, workspace_id: str, agent: Agent, expected: int | None) -> dict[str, Any]:
    record = AgentSaved(workspace_id=workspace_id, agent=agent)
    seq = await deps.catalog.append(
        subjects.agent_log(agent.id), record.model_dump(mode="json"), expected_last_seq=expected
    )
    await deps.settle_catalog_write(seq)
    return agent.model_dump(mode="json")


async def create(deps: Deps, req: CreateObject) -> dict[str, Any]:
    assert req.workspace_id is not None
    params = AgentCreateParams.model_validate(req.params)
    agent = create_agent(params, agent_id=ids.new_id(ids.AGENT), now=now_rfc3339())
    return await _save(deps, req.workspace_id, agent, expected=0)


async def get(deps: Deps, req: GetObject) -> dict[str, Any]:
    agent, _ = await load(deps, req.workspace_id, req.id, req.version)
    return agent.model_dump(mode="json")


async def update(deps: Deps, req: UpdateObject) -> dict[str, Any]:
    current, seq = await load(deps, req.workspace_id, req.id)
    params = AgentUpdateParams.model_validate(req.params)
    updated = update_agent(current, params, sent=set(req.params), now=now_rfc3339())
    if updated is None:
        return current.model_dump(mode="json")
    row = await deps.pool.fetchval("SELECT workspace_id FROM agents WHERE agent_id = $1", req.id)
    return await _save(deps, row, updated, expected=seq)


async def archive(deps: Deps, req: ObjectAction) -> dict[str, Any]:
    current, seq = await load(deps, req.workspace_id, req.id)
    if current.archived_at is not None:
        return current.model_dump(mode="json")
    workspace = await deps.pool.fetchval("SELECT workspace_id FROM agents WHERE agent_id = $1", req.id)
    at = now_rfc3339()
    record = AgentArchived(workspace_id=workspace, agent_id=req.id, archived_at=at)
    new_seq = await deps.catalog.append(
        subjects.agent_log(req.id), record.model_dump(mode="json"), expected_last_seq=seq
    )
    await deps.settle_catalog_write(new_seq)
    return current.model_copy(update={"archived_at": at}).model_dump(mode="json")


async def list_(deps: Deps, req: ListObjects) -> Page:
    assert req.workspace_id is not None
    async with deps.pool.acquire() as conn:
        rows, next_page, _ = await queries.page_by_created(
            conn, table="agents", id_column="agent_id", workspace_id=req.workspace_id, params=req, order="asc"
        )
    return Page(data=[pgtext.load(r["body"]) for r in rows], next_page=next_page)


async def versions(deps: Deps, req: ListObjects) -> Page:
    assert req.agent_id is not None
    await load(deps, req.workspace_id, req.agent_id)
    start = 0
    if req.page:
        key, _ = cursors.decode(req.page, order="asc")
        start = int(key[0]) if key and isinstance(key[0], int) else 0
    rows = await deps.pool.fetch(
        "SELECT version, body FROM agent_versions WHERE agent_id = $1 AND version > $2 ORDER BY version LIMIT $3",
        req.agent_id, start, req.limit + 1,
    )  # fmt: skip
    more = len(rows) > req.limit
    rows = rows[: req.limit]
    return Page(
        data=[pgtext.load(r["body"]) for r in rows],
        next_page=cursors.encode("asc", [rows[-1]["version"]]) if more and rows else None,
    )
