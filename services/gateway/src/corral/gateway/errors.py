"""Every failure leaves as the Anthropic error envelope, with the request id in body and headers.

``{"type":"error","error":{"type":...,"message":...,"details"?:{"error_code":...}},"request_id":"req_..."}``

Sources of errors, and where they become the envelope:

    ApiError            raised by routes, the body reader and the store client (session-store's own
                        errors arrive as ApiError too) -> its status (``STATUS_FOR``; 503 for Unavailable)
    HTTPException       Starlette routing: unknown path (404), wrong method (405)
    bus unanswered      the bus did not answer in time or at all (``corral.bus.unanswered``: a stream
                        with no leader during a NATS cluster failover, NATS paused or restarting, nats-py's
                        timeouts and closed connections), in a route or a middleware (the idempotency
                        claim), or a service's error reply saying so (``error_code`` ``bus_unanswered``)
                        -> 503 ``overloaded_error`` with ``retry-after``, which the SDK retries with the
                        same ``Idempotency-Key``
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

from corral.bus import UNANSWERED, unanswered
from corral.contracts.api.errors import BUS_UNANSWERED, ApiError, ErrorBody, ErrorDetail, ErrorType
from corral.gateway.ratelimit import RateLimited

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER: Final = "request-id"
"""Response header the SDK exposes as ``err.request_id``."""

LEADERLESS_RETRY_AFTER_S: Final = 2
"""Seconds a client is told to wait when the bus did not answer: a JetStream cluster elects a stream
leader in a few seconds."""

SHOULD_RETRY_HEADER: Final = "x-should-retry"
"""Overrides the SDK's retry decision; sent as ``false`` on every 409 (a conflict does not heal by retrying)."""


class Unavailable(ApiError):
    """A service the request needs did not answer in time, or is not running: 503, which the SDK retries.

    With ``retry_after_s`` the response says when (``retry-after``) and that a retry is wanted."""

    def __init__(
        self,
        error_type: ErrorType,
        message: str,
        *,
        error_code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(error_type, message, error_code=error_code)
        self.retry_after_s = retry_after_s

    @property
    def status(self) -> int:
        return 503

    def headers(self) -> dict[str, str] | None:
        if self.retry_after_s is None:
            return None
        return {
            "retry-after": str(self.retry_after_s),
            "retry-after-ms": str(self.retry_after_s * 1000),
            SHOULD_RETRY_HEADER: "true",
        }


def unanswered_error(what: str) -> Unavailable:
    """The 503 for a request whose outcome is unknown because ``what`` did not answer in time."""
    message = (
        f"{what} did not answer in time (a server is restarting or a stream is electing a new leader), so the "
        f"request may or may not have been applied; retry in {LEADERLESS_RETRY_AFTER_S} seconds with the same "
        "Idempotency-Key"
    )
    return Unavailable("overloaded_error", message, error_code=BUS_UNANSWERED, retry_after_s=LEADERLESS_RETRY_AFTER_S)


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
    if exc.error_code == BUS_UNANSWERED and not isinstance(exc, Unavailable):  # a service's error reply
        retry_s = LEADERLESS_RETRY_AFTER_S
        exc = Unavailable(exc.error_type, exc.message, error_code=exc.error_code, retry_after_s=retry_s)
    headers = exc.headers() if isinstance(exc, RateLimited | Unavailable) else None
    return error_response(exc.status, exc.detail(), request_id=request_id, headers=headers)


def bus_unanswered(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception of a group) says the bus did not answer."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(lambda leaf: not isinstance(leaf, BaseExceptionGroup) and not unanswered(leaf)) is None
    return unanswered(exc)


def unanswered_response(exc: BaseException, request_id: str | None) -> JSONResponse:
    """503 for a bus that did not answer: the client retries after ``retry-after`` with the same
    ``Idempotency-Key`` (the SDK does so by itself)."""
    logger.warning("bus did not answer: %r", exc, extra=_fields(request_id))
    return api_error_response(unanswered_error("the event log (NATS)"), request_id=request_id)


def unhandled_error_response(exc: Exception, request_id: str | None) -> JSONResponse:
    """What an exception no handler took becomes: 503 for a bus that did not answer, else a 500."""
    if bus_unanswered(exc):
        return unanswered_response(exc, request_id)
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


async def _on_bus_unanswered(request: Request, exc: Exception) -> Response:
    assert unanswered(exc)
    return unanswered_response(exc, request_id_of(request.scope))


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
    for unanswered_type in UNANSWERED:
        app.add_exception_handler(unanswered_type, _on_bus_unanswered)


def _fields(request_id: str | None, **more: Any) -> dict[str, Any]:
    return {"fields": {"request_id": request_id, **more}}
