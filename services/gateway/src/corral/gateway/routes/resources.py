"""``/v1/sessions/{session_id}/resources``: list, retrieve, update (token rotation), add and delete
(API section 7).

Resources are the session's: they are read from the session object the session-store serves.
``update`` rotates a ``github_repository``'s token: the new token goes straight to the
credential-proxy (OpenBao) and is used from the sandbox's next git request; the response is the
resource, never the token. Adding a resource (``file`` only, per the API) and deleting one are not
supported yet (400 ``feature_not_supported``).
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.contracts import ids
from corral.contracts.api.errors import invalid, not_found
from corral.contracts.rpc import GetObject, StoreOps, UpdateObject
from corral.gateway.body import parse_json_object
from corral.gateway.deps import Caller, Repositories, StoreClient
from corral.gateway.paths import object_id
from corral.gateway.query import Query
from corral.gateway.repositories import REPOSITORY, check_token
from corral.gateway.responses import ok

router = APIRouter(prefix="/v1/sessions/{session_id}/resources", tags=["resources"])

MAX_LIMIT: Final = 1000
FEATURE_NOT_SUPPORTED: Final = "feature_not_supported"


async def _resources(store: StoreClient, caller: Caller, session_id: str) -> list[dict[str, Any]]:
    target = object_id(session_id, prefix=ids.SESSION, kind="session")
    session = await store.call(StoreOps.SESSIONS_GET, GetObject(workspace_id=caller.workspace_id, id=target))
    resources = session.get("resources") or []
    return [r for r in resources if isinstance(r, dict)]


def _find(resources: list[dict[str, Any]], resource_id: str) -> dict[str, Any]:
    for resource in resources:
        if resource.get("id") == resource_id:
            return resource
    raise not_found("resource", resource_id)


@router.get("", response_model=None)
async def list_resources(request: Request, session_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    query = Query(request.query_params)
    limit = query.optional_integer("limit", ge=1, le=MAX_LIMIT)
    page = query.text("page")
    resources = await _resources(store, caller, session_id)
    start = 0
    if page is not None:
        if not page.isdigit() or int(page) > len(resources):
            raise invalid("page: not a page cursor of this list; pass the next_page value a list returned")
        start = int(page)
    end = len(resources) if limit is None else start + limit
    following = str(end) if end < len(resources) else None
    return JSONResponse({"data": resources[start:end], "next_page": following})


@router.get("/{resource_id}", response_model=None)
async def retrieve_resource(session_id: str, resource_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    return ok(_find(await _resources(store, caller, session_id), resource_id))


@router.post("/{resource_id}", response_model=None)
async def update_resource(
    request: Request,
    session_id: str,
    resource_id: str,
    caller: Caller,
    store: StoreClient,
    repositories: Repositories,
) -> JSONResponse:
    body = parse_json_object(await request.body())
    unknown = sorted(set(body) - {"authorization_token"})
    if unknown:
        raise invalid(f"{unknown[0]}: unknown field; only authorization_token can be updated")
    if "authorization_token" not in body:
        raise invalid("authorization_token: required (the new token of the repository)")
    token = check_token(body["authorization_token"], "authorization_token")
    resource = _find(await _resources(store, caller, session_id), resource_id)
    if resource.get("type") != REPOSITORY:
        raise invalid(
            f"resource {resource_id!r} is a {resource.get('type')} resource; only github_repository resources "
            "take a new authorization_token"
        )
    await repositories.register(resource_id, str(resource["url"]), token)
    target = object_id(session_id, prefix=ids.SESSION, kind="session")
    rotated = UpdateObject(workspace_id=caller.workspace_id, id=target, params={"resource_id": resource_id})
    return ok(await store.call(StoreOps.SESSIONS_RESOURCE_UPDATE, rotated))


@router.post("", response_model=None)
async def add_resource(session_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    await _resources(store, caller, session_id)  # 404 for a session that is not the caller's
    raise invalid(
        "adding a resource to a session (file resources) is not supported by this Corral version yet; "
        "give github_repository resources when creating the session",
        error_code=FEATURE_NOT_SUPPORTED,
    )


@router.delete("/{resource_id}", response_model=None)
async def delete_resource(session_id: str, resource_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    _find(await _resources(store, caller, session_id), resource_id)
    raise invalid(
        "deleting a session resource is not supported by this Corral version yet; archive or delete the session",
        error_code=FEATURE_NOT_SUPPORTED,
    )
