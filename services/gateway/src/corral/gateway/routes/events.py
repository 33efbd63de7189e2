"""``/v1/sessions/{id}/events``: send, list, and the live stream (API section 5)."""

from __future__ import annotations

import hashlib
from typing import Final

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.contracts.api.event_params import SendEventsParams
from corral.contracts.api.events import EVENT_TYPES
from corral.contracts.rpc import AppendEvents, ListEvents, StoreOps
from corral.gateway.body import read_params
from corral.gateway.deps import Caller, StoreClient
from corral.gateway.idempotency import HEADER as IDEMPOTENCY_HEADER
from corral.gateway.query import Query
from corral.gateway.responses import page
from corral.gateway.routes.sessions import session_id_of
from corral.gateway.state import gateway_state
from corral.gateway.streamroute import open_stream

router = APIRouter(prefix="/v1/sessions/{session_id}/events", tags=["events"])

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
MAX_TYPES: Final = 100


@router.post("", response_model=None)
async def send_events(request: Request, session_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    """Append the events; the response echoes them with their ids once they are in the log."""
    target = session_id_of(session_id)
    params = await read_params(request, SendEventsParams)
    append = AppendEvents(
        workspace_id=caller.workspace_id,
        session_id=target,
        events=[event.model_dump(mode="json", exclude_unset=True) for event in params.events],
        origin="client",
        dedupe_keys=dedupe_keys(request, caller.workspace_id, target, len(params.events)),
    )
    appended = await store.call(StoreOps.EVENTS_APPEND, append)
    return JSONResponse({"data": appended.events})


def dedupe_keys(request: Request, workspace_id: str, session_id: str, count: int) -> list[str] | None:
    """With an ``Idempotency-Key``, one ``Nats-Msg-Id`` per event derived from it, so a retry whose
    first attempt was stored although it failed here (the session-store answered too late, or died
    after the append) is stored once: the stream drops the repeat within its duplicate window."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if not key:
        return None
    digest = hashlib.sha256(f"{workspace_id}.{session_id}.{key}".encode()).hexdigest()
    return [f"client:{digest}:{i}" for i in range(count)]


@router.get("", response_model=None)
async def list_events(request: Request, session_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    target = session_id_of(session_id)
    query = Query(request.query_params)
    created = query.time_bounds("created_at")
    listing = ListEvents(
        workspace_id=caller.workspace_id,
        session_id=target,
        limit=query.integer("limit", default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
        page=query.text("page"),
        order=query.order(default="asc"),
        types=query.values("types", allowed=EVENT_TYPES, max_items=MAX_TYPES),
        created_at_gt=created.gt,
        created_at_gte=created.gte,
        created_at_lt=created.lt,
        created_at_lte=created.lte,
    )
    return page(await store.call(StoreOps.EVENTS_LIST, listing))


@router.get("/stream", response_model=None)
async def stream_events(request: Request, session_id: str, caller: Caller) -> Response:
    """Live events from now on, until the client leaves or the session is deleted.

    ``GatewayApp`` serves this path in front of FastAPI (``corral.gateway.streamroute``); this route
    serves it while tracing is on, and names it in the OpenAPI document and in 405s.
    """
    return await open_stream(gateway_state(request), caller, session_id, request.query_params)
