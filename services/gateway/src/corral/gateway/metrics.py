"""The gateway's metrics (listed in the top README's "Metrics" table), and the middleware that counts
every HTTP request by its route template (``/v1/sessions/{session_id}/events``, never the ids in it:
a label per session would grow without bound; ``unmatched`` for paths no route serves)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.telemetry.metrics import counter, gauge, histogram

REQUESTS = counter(
    "corral_gateway_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ("route", "method", "status"),
)
REQUEST_DURATION = histogram(
    "corral_gateway_request_duration_seconds",
    "Time from a request's arrival to the end of its response (for an event stream: until it closes), "
    "by route template and method.",
    ("route", "method"),
)
OPEN_STREAMS = gauge("corral_gateway_open_streams", "Event streams (SSE) open now.")
RATE_LIMITED = counter("corral_gateway_rate_limited_total", "Requests refused with 429 by a key's rate limit.")

UNMATCHED = "unmatched"


class RequestMetrics:
    """Outermost ASGI middleware: counts and times every HTTP request once it has been answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = getattr(scope.get("route"), "path", None)
            route = template if isinstance(template, str) else UNMATCHED
            observe(route, str(scope.get("method", "")), status, started)


def observe(route: str, method: str, status: int, started: float) -> None:
    """Count one answered request (``status`` 0: the client went away, or the server failed, before a
    response started) and its time since ``started`` (``time.perf_counter()``)."""
    REQUESTS.labels(route=route, method=method, status=str(status)).inc()
    REQUEST_DURATION.labels(route=route, method=method).observe(time.perf_counter() - started)
