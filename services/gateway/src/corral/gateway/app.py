"""The app factory: the routes, the middleware and the backends it serves from.

``create_app(settings, backends=...)`` serves from the given backends: the bus adapters, which the
composition root (``corral.gateway.composition``) connects before the app starts, or fakes in unit
tests. Without backends every API request is answered 503 (not connected yet).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from corral import telemetry
from corral.gateway import errors
from corral.gateway.auth import KeyCache
from corral.gateway.idempotency import IdempotencyMiddleware
from corral.gateway.metrics import RequestMetrics
from corral.gateway.middleware import BodyLimitMiddleware, RequestContextMiddleware
from corral.gateway.ratelimit import RateLimiter
from corral.gateway.routes import admin, agents, console, environments, events, resources, sessions, vaults
from corral.gateway.routes import health as health_routes
from corral.gateway.settings import Settings
from corral.gateway.state import Backends, GatewayState, state_of
from corral.gateway.streamroute import serve_stream, stream_request

logger = logging.getLogger(__name__)


class GatewayApp(FastAPI):
    """The FastAPI app, which serves event streams itself, in front of its middleware and routing
    (``corral.gateway.streamroute``: an open stream then holds only what it needs), unless
    ``streams_in_front`` is off (tracing on: every request through FastAPI, for its server span)."""

    streams_in_front: bool = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = stream_request(scope) if self.streams_in_front else None
        if session_id is None:
            await super().__call__(scope, receive, send)
        else:
            await serve_stream(state_of(self), scope, receive, send, session_id)


def create_app(settings: Settings, *, backends: Backends | None = None) -> GatewayApp:
    limiter = RateLimiter(rate=settings.rate_limit_rps, burst=settings.rate_limit_burst)
    state = GatewayState(
        settings=settings, keys=KeyCache(ttl_s=settings.auth_cache_ttl_s), backends=backends, limiter=limiter
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.streams.close_all()

    app = GatewayApp(
        title="Corral",
        summary="Self-hosted Claude Managed Agents API (wire-compatible with the anthropic SDK's client.beta)",
        version="0.1.0",
        lifespan=lifespan,
        redoc_url=None,
        # The OpenTelemetry FastAPI instrumentation (below) opens the one server span per request;
        # FastAPI's own spans, metrics and exception log records would double it.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.gateway = state
    # A request is matched against the routers in this order, each router's routes one by one (and
    # the matching router's twice), so the routers the hot paths use (session create, event posts)
    # come first. No two routers serve the same path, so the order changes nothing else.
    routers = [
        module.router
        for module in (sessions, events, resources, agents, environments, vaults, admin, health_routes, console)
    ]
    for router in routers:
        app.include_router(router)
    errors.install(app, routers=routers)
    # Added last = outermost: the request context wraps everything, the body cap sits inside it, and
    # the Idempotency-Key check inside that (it reads the capped body).
    app.add_middleware(IdempotencyMiddleware, state=state, wait_s=settings.store_timeout_s + 5.0)
    app.add_middleware(BodyLimitMiddleware, max_bytes=state.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(RequestMetrics)  # outermost: counts every answer, the last-resort 500 included
    # Outside all of these: the server span (joined to a client's ``traceparent``), named for the
    # route; no span per ASGI message (an event stream sends thousands), none for health probes.
    # Without an OTLP endpoint there is nothing to export, and no layer at all.
    if telemetry.enabled():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # only when exporting spans

        FastAPIInstrumentor.instrument_app(app, excluded_urls="/health", exclude_spans=["receive", "send"])
        app.streams_in_front = False
    return app
