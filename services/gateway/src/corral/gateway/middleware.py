"""Pure ASGI middleware: the request context (id, span, last-resort 500) and the body-size cap."""

from __future__ import annotations

import logging
from collections.abc import Callable

from opentelemetry import trace
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.contracts import ids
from corral.contracts.api.errors import ApiError
from corral.gateway.errors import (
    REQUEST_ID_HEADER,
    api_error_response,
    bus_unanswered,
    request_id_of,
    unhandled_error_response,
)

logger = logging.getLogger(__name__)


class RequestContextMiddleware:
    """Outermost: a ``req_...`` id on every response (header and error bodies), also set on the
    request's server span (the OpenTelemetry FastAPI instrumentation's, around this middleware).

    An exception nothing else handled is logged with its traceback and answered with a 500
    ``api_error`` envelope that carries only the request id; one saying the bus did not answer
    (the idempotency claim's KV write, say) is answered with the retryable 503 instead.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ids.new_id(ids.REQUEST)
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        method = str(scope.get("method", ""))
        span = trace.get_current_span()
        span.set_attribute("corral.request_id", request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            logger.debug("client went away", extra={"fields": {"request_id": request_id}})
        except Exception as exc:
            if bus_unanswered(exc):  # a bus call in a middleware (the idempotency claim): a 503 to retry
                if not started:
                    await unhandled_error_response(exc, request_id)(scope, receive, send_with_id)
                return
            logger.exception(
                "unhandled error in %s %s",
                method,
                scope.get("path", ""),
                extra={"fields": {"request_id": request_id}},
            )
            span.set_status(trace.StatusCode.ERROR)
            if not started:
                await unhandled_error_response(exc, request_id)(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes()`` with 413 ``request_too_large``, before they are read whole.

    ``max_bytes`` is asked per request: the limit drops to what the bus can store once it is connected.
    A declared ``content-length`` is checked up front; a chunked body is counted as it arrives
    and the read that crosses the limit raises (the route's error handler answers 413).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: Callable[[], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes()
        refusal = declared_length_refusal(scope, limit)
        if refusal is not None:
            await api_error_response(refusal, request_id=request_id_of(scope))(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, counted_receive, send)


def declared_length_refusal(scope: Scope, limit: int) -> ApiError | None:
    """The error for a declared ``content-length`` that is not a number or is over ``limit``, else ``None``."""
    declared = Headers(scope=scope).get("content-length")
    if declared is None:
        return None
    if not declared.strip().isdigit():
        return ApiError("invalid_request_error", f"content-length header is not a number: {declared!r}")
    return _too_large(limit) if int(declared) > limit else None


def _too_large(limit: int) -> ApiError:
    return ApiError(
        "request_too_large",
        f"request body is larger than the limit of {limit} bytes; send less (split a long text into several messages)",
    )
