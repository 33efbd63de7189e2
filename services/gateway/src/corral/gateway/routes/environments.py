"""``/v1/environments``: create, retrieve, update, list, archive, delete (API section 3)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.contracts import ids
from corral.contracts.api.environments import EnvironmentCreateParams, EnvironmentUpdateParams
from corral.contracts.rpc import CreateObject, GetObject, ListObjects, ObjectAction, StoreOps, UpdateObject
from corral.gateway.body import read_params
from corral.gateway.deps import Caller, StoreClient
from corral.gateway.paths import object_id
from corral.gateway.query import Query
from corral.gateway.responses import deleted, ok, page

router = APIRouter(prefix="/v1/environments", tags=["environments"])

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100


def _environment_id(value: str) -> str:
    return object_id(value, prefix=ids.ENVIRONMENT, kind="environment")


@router.post("", response_model=None)
async def create_environment(request: Request, caller: Caller, store: StoreClient) -> JSONResponse:
    params = await read_params(request, EnvironmentCreateParams)
    create = CreateObject(workspace_id=caller.workspace_id, params=params.model_dump(mode="json", exclude_unset=True))
    return ok(await store.call(StoreOps.ENVIRONMENTS_CREATE, create))


@router.get("/{environment_id}", response_model=None)
async def retrieve_environment(environment_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    get = GetObject(workspace_id=caller.workspace_id, id=_environment_id(environment_id))
    return ok(await store.call(StoreOps.ENVIRONMENTS_GET, get))


@router.post("/{environment_id}", response_model=None)
async def update_environment(request: Request, environment_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    target = _environment_id(environment_id)
    params = await read_params(request, EnvironmentUpdateParams)
    update = UpdateObject(
        workspace_id=caller.workspace_id, id=target, params=params.model_dump(mode="json", exclude_unset=True)
    )
    return ok(await store.call(StoreOps.ENVIRONMENTS_UPDATE, update))


@router.get("", response_model=None)
async def list_environments(request: Request, caller: Caller, store: StoreClient) -> JSONResponse:
    query = Query(request.query_params)
    listing = ListObjects(
        workspace_id=caller.workspace_id,
        limit=query.integer("limit", default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
        page=query.text("page"),
        include_archived=query.boolean("include_archived"),
    )
    return page(await store.call(StoreOps.ENVIRONMENTS_LIST, listing))


@router.post("/{environment_id}/archive", response_model=None)
async def archive_environment(environment_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    action = ObjectAction(workspace_id=caller.workspace_id, id=_environment_id(environment_id))
    return ok(await store.call(StoreOps.ENVIRONMENTS_ARCHIVE, action))


@router.delete("/{environment_id}", response_model=None)
async def delete_environment(environment_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    """``{"id": ..., "type": "environment_deleted"}`` with 200 (the SDK expects JSON, not a 204)."""
    action = ObjectAction(workspace_id=caller.workspace_id, id=_environment_id(environment_id))
    return deleted(await store.call(StoreOps.ENVIRONMENTS_DELETE, action))
