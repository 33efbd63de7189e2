"""``/v1/sessions/{id}/events``: send, list, and the live stream (API section 5)."""

from __future__ import annotations

import hashlib
from typing import Final

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.contracts.api.event_params import SendEventsParams
from corral.contracts.api.events import EVENT_TYPES
from corral.contracts.rpc import AppendEvents, GetObject, ListEvents, StoreOps
from corral.gateway.body import read_params
from corral.gateway.deps import Caller, Feed, GatewaySettings, StoreClient
from corral.gateway.idempotency import HEADER as IDEMPOTENCY_HEADER
from corral.gateway.query import Query
from corral.gateway.responses import page
from corral.gateway.routes.sessions import session_id_of
from corral.gateway.sse import DELTA_EVENT_TYPES, MAX_EVENT_DELTAS, EventStreamResponse, StreamInbox
from corral.gateway.state import gateway_state

router = APIRouter(prefix="/v1/sessions/{session_id}/events", tags=["events"])

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
MAX_TYPES: Final = 100

STREAM_HEADERS: Final = {"cache-control": "no-cache", "x-accel-buffering": "no"}


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
async def stream_events(
    request: Request, session_id: str, caller: Caller, store: StoreClient, feed: Feed, settings: GatewaySettings
) -> Response:
    """Live events from now on, until the client leaves or the session is deleted.

    Errors (unknown session, bad ``event_deltas[]``) are ordinary JSON errors, sent before the
    stream starts. The log is followed before the headers go out, so nothing appended after the
    client sees them is missed.
    """
    target = session_id_of(session_id)
    requested = Query(request.query_params).values(
        "event_deltas", allowed=DELTA_EVENT_TYPES, max_items=MAX_EVENT_DELTAS
    )
    await store.call(StoreOps.SESSIONS_GET, GetObject(workspace_id=caller.workspace_id, id=target))
    queue = StreamInbox()
    after_seq = await feed.attach_log(target, queue)
    try:
        deltas = await feed.open_deltas(target) if requested else None
    except BaseException:
        feed.detach_log(target, queue)
        raise
    return EventStreamResponse(
        feed,
        target,
        queue,
        after_seq=after_seq,
        deltas=deltas,
        delta_types=frozenset(requested or ()),
        heartbeat_s=settings.sse_heartbeat_s,
        registry=gateway_state(request).streams,
        headers=STREAM_HEADERS,
    )
