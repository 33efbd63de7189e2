"""The admin API: ``/v1/organizations/workspaces`` and ``/v1/organizations/api_keys``.

The paths and shapes are the Anthropic Admin API's (see ``corral.contracts.api.admin``), so they
cannot collide with the Managed Agents endpoints. Every route needs a key with role ``admin``
(``AdminCaller``: 401 for a missing, unknown, suspended or revoked key, 403 for any other key).
Corral adds ``POST /v1/organizations/api_keys``: the gateway mints the key, sends only its SHA-256
and a hint to the session-store, and answers the key itself in ``key`` this once; it is never
stored or shown again. Revoking a key is ``POST /v1/organizations/api_keys/{id}`` with
``{"status": "archived"}`` (``inactive`` suspends it, ``active`` resumes a suspended key); every
gateway refuses it within milliseconds (``corral.gateway.keydirectory``).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final, Literal

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.contracts import ids
from corral.contracts.admin_rpc import AdminCreate, AdminGet, AdminList, AdminPage, AdminUpdate, IssueApiKey
from corral.contracts.api.admin import (
    KEY_PREFIX,
    ApiKeyCreateParams,
    ApiKeyUpdateParams,
    WorkspaceCreateParams,
    WorkspaceUpdateParams,
    key_hint,
)
from corral.contracts.api.errors import not_found
from corral.contracts.rpc import StoreOps
from corral.gateway.body import read_params
from corral.gateway.deps import AdminCaller, StoreClient
from corral.gateway.paths import object_id
from corral.gateway.query import Query
from corral.gateway.responses import ok

router = APIRouter(prefix="/v1/organizations", tags=["admin"])

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 1000
KEY_STATUSES: Final = ("active", "inactive", "archived")


def _workspace_id(value: str) -> str:
    """Workspace ids are ``wrkspc_...``, but the bootstrap workspace keeps the id it was given."""
    if not 0 < len(value) <= 128 or not value.replace("_", "").replace("-", "").isalnum():
        raise not_found("workspace", value)
    return value


def _key_id(value: str) -> str:
    return object_id(value, prefix=ids.API_KEY, kind="api_key")


def _listing(request: Request, **extra: object) -> AdminList:
    query = Query(request.query_params)
    return AdminList.model_validate(
        {
            "limit": query.integer("limit", default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
            "after_id": query.text("after_id"),
            "before_id": query.text("before_id"),
            **extra,
        }
    )


def _page(result: AdminPage) -> JSONResponse:
    return JSONResponse(result.model_dump(mode="json"))


# --- workspaces ---------------------------------------------------------------------------------------
@router.post("/workspaces", response_model=None)
async def create_workspace(request: Request, _caller: AdminCaller, store: StoreClient) -> JSONResponse:
    params = await read_params(request, WorkspaceCreateParams)
    create = AdminCreate(params=params.model_dump(mode="json", exclude_unset=True))
    return ok(await store.call(StoreOps.WORKSPACES_CREATE, create))


@router.get("/workspaces", response_model=None)
async def list_workspaces(request: Request, _caller: AdminCaller, store: StoreClient) -> JSONResponse:
    include_archived = Query(request.query_params).boolean("include_archived")
    return _page(await store.call(StoreOps.WORKSPACES_LIST, _listing(request, include_archived=include_archived)))


@router.get("/workspaces/{workspace_id}", response_model=None)
async def retrieve_workspace(workspace_id: str, _caller: AdminCaller, store: StoreClient) -> JSONResponse:
    return ok(await store.call(StoreOps.WORKSPACES_GET, AdminGet(id=_workspace_id(workspace_id))))


@router.post("/workspaces/{workspace_id}", response_model=None)
async def update_workspace(
    request: Request, workspace_id: str, _caller: AdminCaller, store: StoreClient
) -> JSONResponse:
    target = _workspace_id(workspace_id)
    params = await read_params(request, WorkspaceUpdateParams)
    update = AdminUpdate(id=target, params=params.model_dump(mode="json", exclude_unset=True))
    return ok(await store.call(StoreOps.WORKSPACES_UPDATE, update))


@router.post("/workspaces/{workspace_id}/archive", response_model=None)
async def archive_workspace(workspace_id: str, _caller: AdminCaller, store: StoreClient) -> JSONResponse:
    """Archives the workspace and revokes every key of it."""
    return ok(await store.call(StoreOps.WORKSPACES_ARCHIVE, AdminGet(id=_workspace_id(workspace_id))))


# --- API keys -----------------------------------------------------------------------------------------
@router.post("/api_keys", response_model=None)
async def create_api_key(request: Request, _caller: AdminCaller, store: StoreClient) -> JSONResponse:
    """The new key, with the key itself in ``key``: shown this once, never stored."""
    params = await read_params(request, ApiKeyCreateParams)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    issue = IssueApiKey(
        key_sha256=hashlib.sha256(key.encode()).hexdigest(),
        partial_key_hint=key_hint(key),
        params=params.model_dump(mode="json", exclude_unset=True),
    )
    created = await store.call(StoreOps.API_KEYS_ISSUE, issue)
    return ok({**created, "key": key})


@router.get("/api_keys", response_model=None)
async def list_api_keys(request: Request, _caller: AdminCaller, store: StoreClient) -> JSONResponse:
    query = Query(request.query_params)
    status: Literal["active", "inactive", "archived"] | None = None
    if query.text("status") is not None:
        chosen = query.choice("status", KEY_STATUSES, default="active")
        status = "active" if chosen == "active" else "inactive" if chosen == "inactive" else "archived"
    listing = _listing(request, workspace_id=query.text("workspace_id"), status=status)
    return _page(await store.call(StoreOps.API_KEYS_LIST, listing))


@router.get("/api_keys/{api_key_id}", response_model=None)
async def retrieve_api_key(api_key_id: str, _caller: AdminCaller, store: StoreClient) -> JSONResponse:
    return ok(await store.call(StoreOps.API_KEYS_GET, AdminGet(id=_key_id(api_key_id))))


@router.post("/api_keys/{api_key_id}", response_model=None)
async def update_api_key(request: Request, api_key_id: str, _caller: AdminCaller, store: StoreClient) -> JSONResponse:
    """Rename, suspend (``inactive``), resume, revoke (``archived``: permanent) or set the rate limit
    (``rate_limit: null``: the gateway's defaults again)."""
    target = _key_id(api_key_id)
    params = await read_params(request, ApiKeyUpdateParams)
    update = AdminUpdate(id=target, params=params.model_dump(mode="json", exclude_unset=True))
    return ok(await store.call(StoreOps.API_KEYS_UPDATE, update))
