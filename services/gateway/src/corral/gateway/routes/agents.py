"""``/v1/agents``: create, retrieve (by version), update, list, archive, versions (API section 2)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.contracts import ids
from corral.contracts.api.agents import AgentCreateParams, AgentUpdateParams
from corral.contracts.rpc import CreateObject, GetObject, ListObjects, ObjectAction, StoreOps, UpdateObject
from corral.gateway.body import read_params
from corral.gateway.deps import Caller, StoreClient
from corral.gateway.paths import object_id
from corral.gateway.query import Query
from corral.gateway.responses import ok, page

router = APIRouter(prefix="/v1/agents", tags=["agents"])

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100


def _agent_id(value: str) -> str:
    return object_id(value, prefix=ids.AGENT, kind="agent")


@router.post("", response_model=None)
async def create_agent(request: Request, caller: Caller, store: StoreClient) -> JSONResponse:
    params = await read_params(request, AgentCreateParams)
    create = CreateObject(workspace_id=caller.workspace_id, params=params.model_dump(mode="json", exclude_unset=True))
    return ok(await store.call(StoreOps.AGENTS_CREATE, create))


@router.get("/{agent_id}", response_model=None)
async def retrieve_agent(request: Request, agent_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    version = Query(request.query_params).optional_integer("version", ge=1)
    get = GetObject(workspace_id=caller.workspace_id, id=_agent_id(agent_id), version=version)
    return ok(await store.call(StoreOps.AGENTS_GET, get))


@router.post("/{agent_id}", response_model=None)
async def update_agent(request: Request, agent_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    target = _agent_id(agent_id)
    params = await read_params(request, AgentUpdateParams)
    update = UpdateObject(
        workspace_id=caller.workspace_id, id=target, params=params.model_dump(mode="json", exclude_unset=True)
    )
    return ok(await store.call(StoreOps.AGENTS_UPDATE, update))


@router.get("", response_model=None)
async def list_agents(request: Request, caller: Caller, store: StoreClient) -> JSONResponse:
    query = Query(request.query_params)
    created = query.time_bounds("created_at", ops=("gte", "lte"))
    listing = ListObjects(
        workspace_id=caller.workspace_id,
        limit=query.integer("limit", default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
        page=query.text("page"),
        include_archived=query.boolean("include_archived"),
        created_at_gte=created.gte,
        created_at_lte=created.lte,
    )
    return page(await store.call(StoreOps.AGENTS_LIST, listing))


@router.post("/{agent_id}/archive", response_model=None)
async def archive_agent(agent_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    action = ObjectAction(workspace_id=caller.workspace_id, id=_agent_id(agent_id))
    return ok(await store.call(StoreOps.AGENTS_ARCHIVE, action))


@router.get("/{agent_id}/versions", response_model=None)
async def list_agent_versions(request: Request, agent_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    query = Query(request.query_params)
    listing = ListObjects(
        workspace_id=caller.workspace_id,
        agent_id=_agent_id(agent_id),
        limit=query.integer("limit", default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
        page=query.text("page"),
    )
    return page(await store.call(StoreOps.AGENTS_VERSIONS, listing))
