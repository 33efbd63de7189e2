"""Every failure leaves as the Anthropic error envelope, with the request id in body and headers.

``{"type":"error","error":{"type":...,"message":...,"details"?:{"error_code":...}},"request_id":"req_..."}``

Sources of errors, and where they become the envelope:

    ApiError            raised by routes, the body reader and the store client (session-store's own
                        errors arrive as ApiError too) -> its status (``STATUS_FOR``; 503 for Unavailable)
    HTTPException       Starlette routing: unknown path (404), wrong method (405)
    StreamUnavailable   a bus write no server answered (a stream with no leader during a NATS cluster
                        failover), in a route or a middleware (the idempotency claim) -> 503 with
                        ``retry-after``, which the SDK retries
    RequestValidation   FastAPI parameter validation -> 400 (FastAPI's default would be a 422)
    anything else       -> 500 ``api_error`` in ``corral.gateway.middleware`` (logged, never echoed)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any, Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler, Scope

from corral.bus import StreamUnavailable
from corral.contracts.api.errors import ApiError, ErrorBody, ErrorDetail
from corral.gateway.ratelimit import RateLimited

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER: Final = "request-id"
"""Response header the SDK exposes as ``err.request_id``."""

LEADERLESS_RETRY_AFTER_S: Final = 2
"""Seconds a client is told to wait when a stream has no leader: a JetStream cluster elects one in a
few seconds."""

SHOULD_RETRY_HEADER: Final = "x-should-retry"
"""Overrides the SDK's retry decision; sent as ``false`` on every 409 (a conflict does not heal by retrying)."""


class Unavailable(ApiError):
    """A service the request needs did not answer in time, or is not running: 503, which the SDK retries."""

    @property
    def status(self) -> int:
        return 503


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state")
    if isinstance(state, dict):
        value = state.get("request_id")
        return value if isinstance(value, str) else None
    return None


def error_response(
    status: int, detail: ErrorDetail, *, request_id: str | None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=detail, request_id=request_id).model_dump(mode="json")
    if detail.details is None:
        del body["error"]["details"]
    extra = dict(headers or {})
    if status == 409:
        extra[SHOULD_RETRY_HEADER] = "false"
    return JSONResponse(body, status_code=status, headers=extra)


def api_error_response(exc: ApiError, *, request_id: str | None) -> JSONResponse:
    headers = exc.headers() if isinstance(exc, RateLimited) else None
    return error_response(exc.status, exc.detail(), request_id=request_id, headers=headers)


def leaderless_response(exc: StreamUnavailable, request_id: str | None) -> JSONResponse:
    """503 for a write no server answered: the client retries after ``retry-after`` (the SDK does so
    by itself); nothing was stored."""
    message = (
        "the event log is electing a new leader (a server of the NATS cluster went away) and took no "
        f"write; nothing was stored. Retry in {LEADERLESS_RETRY_AFTER_S} seconds"
    )
    retry = {
        "retry-after": str(LEADERLESS_RETRY_AFTER_S),
        "retry-after-ms": str(LEADERLESS_RETRY_AFTER_S * 1000),
        SHOULD_RETRY_HEADER: "true",
    }
    logger.warning("bus write unanswered: %s", exc, extra=_fields(request_id, stream=exc.stream))
    return error_response(503, ErrorDetail(type="api_error", message=message), request_id=request_id, headers=retry)


def unhandled_error_response(exc: Exception, request_id: str | None) -> JSONResponse:
    """What an exception no handler took becomes: 503 for a leaderless stream, else a 500."""
    if isinstance(exc, StreamUnavailable):
        return leaderless_response(exc, request_id)
    return internal_error_response(request_id)


def internal_error_response(request_id: str | None) -> JSONResponse:
    message = f"internal error (request-id {request_id}); the server log has the details"
    return error_response(500, ErrorDetail(type="api_error", message=message), request_id=request_id)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    request_id = request_id_of(request.scope)
    if exc.status >= 500:
        logger.warning("%s %s failed: %s", request.method, request.url.path, exc.message, extra=_fields(request_id))
    return api_error_response(exc, request_id=request_id)


def _http_exception_handler(methods_by_path: list[tuple[re.Pattern[str], frozenset[str]]]) -> ExceptionHandler:
    def allowed_methods(path: str) -> list[str]:
        found: set[str] = set()
        for pattern, methods in methods_by_path:
            if pattern.match(path):
                found |= methods
        return sorted(found - {"HEAD"})

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        request_id = request_id_of(request.scope)
        method, path = request.method, request.url.path
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            detail = ErrorDetail(type="not_found_error", message=f"no such endpoint: {method} {path}")
        elif exc.status_code == 405:
            # Starlette's Allow header names the first matching route's methods only.
            allowed = allowed_methods(path)
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
            if allowed:
                headers["allow"] = ", ".join(allowed)
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            detail = ErrorDetail(
                type="invalid_request_error", message=f"method {method} is not allowed on {path}{hint}"
            )
        else:
            kind = "api_error" if exc.status_code >= 500 else "invalid_request_error"
            detail = ErrorDetail(type=kind, message=str(exc.detail))
        return error_response(exc.status_code, detail, request_id=request_id, headers=headers)

    return on_http_exception


async def _on_stream_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StreamUnavailable)
    return leaderless_response(exc, request_id_of(request.scope))


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header"))
        parts.append(f"{loc}: {error.get('msg', 'invalid')}" if loc else str(error.get("msg", "invalid")))
    detail = ErrorDetail(type="invalid_request_error", message="; ".join(parts) or "invalid request")
    return error_response(400, detail, request_id=request_id_of(request.scope))


def install(app: FastAPI, *, routers: Iterable[APIRouter]) -> None:
    """Replace FastAPI's default handlers (plain ``{"detail": ...}`` bodies, 422s) with the envelope."""
    methods_by_path = [
        (route.path_regex, frozenset(route.methods or ()))
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
    ]
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(HTTPException, _http_exception_handler(methods_by_path))
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StreamUnavailable, _on_stream_unavailable)


def _fields(request_id: str | None, **more: Any) -> dict[str, Any]:
    return {"fields": {"request_id": request_id, **more}}
