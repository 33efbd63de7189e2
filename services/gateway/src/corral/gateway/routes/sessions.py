"""``/v1/sessions``: create, retrieve, update, list, archive, delete (API section 4)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.contracts import ids
from corral.contracts.api.errors import invalid
from corral.contracts.api.sessions import SESSION_STATUSES, SessionCreateParams, SessionUpdateParams
from corral.contracts.rpc import CreateObject, GetObject, ListObjects, ObjectAction, StoreOps, UpdateObject
from corral.gateway.body import read_params
from corral.gateway.deps import Caller, StoreClient
from corral.gateway.paths import object_id
from corral.gateway.query import Query
from corral.gateway.repositories import REPOSITORY, register_all, take_tokens
from corral.gateway.responses import deleted, ok, page
from corral.gateway.state import gateway_state

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100


def session_id_of(value: str) -> str:
    return object_id(value, prefix=ids.SESSION, kind="session")


@router.post("", response_model=None)
async def create_session(request: Request, caller: Caller) -> JSONResponse:
    # The store is taken from the request rather than declared as a ``StoreClient`` dependency: one
    # dependency solve fewer on the busiest write (``Caller`` has already checked the backends are ready).
    backends = gateway_state(request).ready()
    store = backends.store
    params = await read_params(request, SessionCreateParams)
    sent = params.model_dump(mode="json", exclude_unset=True)
    taken = take_tokens(sent.get("resources") or [])
    if not taken.tokens:
        return ok(
            await store.call(StoreOps.SESSIONS_CREATE, CreateObject(workspace_id=caller.workspace_id, params=sent))
        )
    # Repositories: their tokens go to the credential-proxy (OpenBao), never on to the session-store.
    tokens = backends.repositories
    if tokens is None:
        raise invalid("resources: repositories are not available in this deployment (no credential-proxy)")
    sent["resources"] = taken.resources
    await register_all(tokens, taken)
    try:
        created = await store.call(
            StoreOps.SESSIONS_CREATE, CreateObject(workspace_id=caller.workspace_id, params=sent)
        )
    except BaseException:
        await tokens.forget(list(taken.tokens))
        raise
    return ok(created)


@router.get("/{session_id}", response_model=None)
async def retrieve_session(session_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    get = GetObject(workspace_id=caller.workspace_id, id=session_id_of(session_id))
    return ok(await store.call(StoreOps.SESSIONS_GET, get))


@router.post("/{session_id}", response_model=None)
async def update_session(request: Request, session_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    target = session_id_of(session_id)
    params = await read_params(request, SessionUpdateParams)
    update = UpdateObject(
        workspace_id=caller.workspace_id, id=target, params=params.model_dump(mode="json", exclude_unset=True)
    )
    return ok(await store.call(StoreOps.SESSIONS_UPDATE, update))


@router.get("", response_model=None)
async def list_sessions(request: Request, caller: Caller, store: StoreClient) -> JSONResponse:
    """A bidirectional page: ``prev_page`` as well as ``next_page``."""
    query = Query(request.query_params)
    created = query.time_bounds("created_at")
    listing = ListObjects(
        workspace_id=caller.workspace_id,
        agent_id=query.text("agent_id"),
        agent_version=query.optional_integer("agent_version", ge=1),
        statuses=query.values("statuses", allowed=SESSION_STATUSES),
        include_archived=query.boolean("include_archived"),
        order=query.order(default="desc"),
        limit=query.integer("limit", default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
        page=query.text("page"),
        created_at_gt=created.gt,
        created_at_gte=created.gte,
        created_at_lt=created.lt,
        created_at_lte=created.lte,
    )
    return page(await store.call(StoreOps.SESSIONS_LIST, listing), bidirectional=True)


@router.post("/{session_id}/archive", response_model=None)
async def archive_session(session_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    action = ObjectAction(workspace_id=caller.workspace_id, id=session_id_of(session_id))
    return ok(await store.call(StoreOps.SESSIONS_ARCHIVE, action))


@router.delete("/{session_id}", response_model=None)
async def delete_session(request: Request, session_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    target = session_id_of(session_id)
    action = ObjectAction(workspace_id=caller.workspace_id, id=target)
    tokens = gateway_state(request).ready().repositories
    session = None
    if tokens is not None:  # the session's repositories, whose tokens leave OpenBao with it
        session = await store.call(StoreOps.SESSIONS_GET, GetObject(workspace_id=caller.workspace_id, id=target))
    result = deleted(await store.call(StoreOps.SESSIONS_DELETE, action))
    if tokens is not None and isinstance(session, dict):
        resources = session.get("resources") or []
        await tokens.forget([r["id"] for r in resources if r.get("type") == REPOSITORY and "id" in r])
    return result
