"""``GET /v1/sessions/{id}/events/stream``, served in front of FastAPI.

An event stream is a request that lives as long as its client, so whatever the request machinery
holds, it holds for hours. Through FastAPI that was, per open stream (tracemalloc, ~31 KB in all):
Starlette's middleware frames, router and exception middleware, FastAPI's request handling and its
three ``AsyncExitStack``s, the dependency solving and the gateway's four middleware, about half of
it. ``GatewayApp`` (``corral.gateway.app``) serves this one path and method itself, before its
middleware stack, doing what that stack does for it, in the same order and with the same answers:

1. a request id: the ``request-id`` header on every answer, ``request_id`` in error bodies
   (``RequestContextMiddleware``);
2. a declared ``content-length`` that is not a number (400) or over the body limit (413)
   (``BodyLimitMiddleware``; a GET's body is never read);
3. the bus connected (503), the API key (401), the workspace it names (403), the key's rate limit
   (429) (``deps.authorize``, the ``Caller`` dependency of every route);
4. the session id's prefix (404), ``event_deltas[]`` (400), the session in the key's workspace
   (404), then the stream (``open_stream``, which the FastAPI route calls too);
5. every failure as the Anthropic error envelope (``corral.gateway.errors``): a bus that did not
   answer is a 503 to retry, anything unexpected a logged 500 carrying only the request id;
6. the request counted and timed under its route template (``metrics.observe``). The access log is
   uvicorn's, written for every request alike.

Another method on the path (405 with ``allow``), a trailing slash, and every stream while tracing is
on (an OTLP endpoint: each request's server span comes from FastAPI's instrumentation) go through
FastAPI and its route as before.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Final

from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from corral.contracts import ids
from corral.contracts.api.errors import ApiError
from corral.contracts.rpc import GetObject, ResolvedKey, StoreOps
from corral.gateway.deps import authorize
from corral.gateway.errors import (
    REQUEST_ID_HEADER,
    api_error_response,
    bus_unanswered,
    internal_error_response,
    unanswered_response,
)
from corral.gateway.metrics import observe
from corral.gateway.middleware import declared_length_refusal
from corral.gateway.query import Query
from corral.gateway.routes.sessions import session_id_of
from corral.gateway.sse import DELTA_EVENT_TYPES, MAX_EVENT_DELTAS, EventStreamResponse, StreamInbox
from corral.gateway.state import GatewayState

logger = logging.getLogger(__name__)

STREAM_ROUTE: Final = "/v1/sessions/{session_id}/events/stream"
"""The route's template (its metrics label; the FastAPI route's path)."""

STREAM_HEADERS: Final = {"cache-control": "no-cache", "x-accel-buffering": "no"}

_PATH: Final = re.compile(r"/v1/sessions/([^/]+)/events/stream")
_REQUEST_ID_HEADER: Final = REQUEST_ID_HEADER.encode("latin-1")


def stream_request(scope: Scope) -> str | None:
    """The session id a ``GET`` of the stream path names (as written), else ``None``."""
    if scope["type"] != "http" or scope.get("method") != "GET" or scope.get("root_path"):
        return None
    match = _PATH.fullmatch(scope["path"])
    return match.group(1) if match is not None else None


async def open_stream(
    state: GatewayState, caller: ResolvedKey, session_id: str, params: QueryParams
) -> EventStreamResponse:
    """The stream of ``session_id`` (as written in the path) for ``caller``.

    Errors (unknown session, bad ``event_deltas[]``) are raised before the stream starts. The log is
    followed before the headers go out, so nothing appended after the client sees them is missed.
    """
    backends = state.ready()
    target = session_id_of(session_id)
    requested = Query(params).values("event_deltas", allowed=DELTA_EVENT_TYPES, max_items=MAX_EVENT_DELTAS)
    await backends.store.call(StoreOps.SESSIONS_GET, GetObject(workspace_id=caller.workspace_id, id=target))
    feed, queue = backends.feed, StreamInbox()
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
        heartbeat_s=state.settings.sse_heartbeat_s,
        registry=state.streams,
        headers=STREAM_HEADERS,
    )


async def serve_stream(state: GatewayState, scope: Scope, receive: Receive, send: Send, session_id: str) -> None:
    """Answer one stream request (``stream_request(scope)`` gave ``session_id``) as the full stack would."""
    started = time.perf_counter()
    method = scope["method"]
    request_id = ids.new_id(ids.REQUEST)
    scope.setdefault("state", {})["request_id"] = request_id
    status = 0
    try:
        try:
            response: Response = await _stream(state, scope, session_id)
        except Exception as exc:
            response = _refusal(exc, method, scope["path"], request_id)
        response.raw_headers.append((_REQUEST_ID_HEADER, request_id.encode("latin-1")))
        status = response.status_code
        await response(scope, receive, send)
    except Exception:  # the stream failed once started: logged, as the request context does
        fields = {"fields": {"request_id": request_id}}
        logger.exception("unhandled error in %s %s", method, scope["path"], extra=fields)
    finally:
        observe(STREAM_ROUTE, method, status, started)


async def _stream(state: GatewayState, scope: Scope, session_id: str) -> EventStreamResponse:
    refusal = declared_length_refusal(scope, state.max_body_bytes())
    if refusal is not None:
        raise refusal
    caller = await authorize(state, Headers(scope=scope))
    return await open_stream(state, caller, session_id, QueryParams(scope["query_string"]))


def _refusal(exc: Exception, method: str, path: str, request_id: str) -> Response:
    """What the exception handlers and the request context make of ``exc`` (``corral.gateway.errors``)."""
    fields = {"fields": {"request_id": request_id}}
    if isinstance(exc, ApiError):
        if exc.status >= 500:
            logger.warning("%s %s failed: %s", method, path, exc.message, extra=fields)
        return api_error_response(exc, request_id=request_id)
    if bus_unanswered(exc):
        return unanswered_response(exc, request_id)
    logger.exception("unhandled error in %s %s", method, path, extra=fields)
    return internal_error_response(request_id)
