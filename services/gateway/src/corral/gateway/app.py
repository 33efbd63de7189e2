"""The app factory and its lifespan: connect the bus, wire the backends, answer health requests.

``create_app(settings)`` connects to NATS in the lifespan; ``create_app(settings, backends=...)``
uses the given backends as they are (unit tests pass fakes and need no lifespan).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from corral.bus import Bus, instance_name, serve_health
from corral.contracts import subjects
from corral.contracts.rpc import Health
from corral.gateway import errors
from corral.gateway.auth import KeyCache
from corral.gateway.feed import BusFeed
from corral.gateway.idempotency import IdempotencyMiddleware
from corral.gateway.middleware import BodyLimitMiddleware, RequestContextMiddleware
from corral.gateway.probe import BusProbe, gateway_health
from corral.gateway.ratelimit import RateLimiter
from corral.gateway.routes import agents, environments, events, sessions, vaults
from corral.gateway.routes import health as health_routes
from corral.gateway.settings import Settings
from corral.gateway.state import Backends, GatewayState
from corral.gateway.store import BusStore

logger = logging.getLogger(__name__)


class StartupFailed(RuntimeError):
    """NATS did not accept a connection within ``startup_timeout_s``."""


def create_app(settings: Settings, *, backends: Backends | None = None) -> FastAPI:
    limiter = (
        RateLimiter(rate=settings.rate_limit_rps, burst=settings.rate_limit_burst) if settings.rate_limit_rps else None
    )
    state = GatewayState(
        settings=settings, keys=KeyCache(ttl_s=settings.auth_cache_ttl_s), backends=backends, limiter=limiter
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if state.backends is not None:
            yield
            return
        async with contextlib.AsyncExitStack() as stack:
            bus = await _connect(stack, state)
            if bus is None:  # stopped while connecting: let uvicorn shut down at once
                yield
                return
            instance = instance_name()

            async def report() -> Health:
                return gateway_health(instance, bus_connected=bus.connected)

            await stack.enter_async_context(serve_health(bus, "gateway", report))
            replies = await bus.ensure_key_value(subjects.idempotency_spec(settings.idempotency_ttl_s))
            state.backends = Backends(
                store=BusStore(bus, timeout_s=settings.store_timeout_s),
                feed=BusFeed(bus),
                probe=BusProbe(bus),
                replies=replies,
            )
            logger.info(
                "gateway %s ready on http://%s:%d (bus %s)", instance, settings.host, settings.port, settings.nats.url
            )
            try:
                yield
            finally:
                state.streams.close_all()
                state.backends = None

    app = FastAPI(
        title="Corral",
        summary="Self-hosted Claude Managed Agents API (wire-compatible with the anthropic SDK's client.beta)",
        version="0.1.0",
        lifespan=lifespan,
        redoc_url=None,
        # RequestContextMiddleware opens the one server span per request (with the request id);
        # FastAPI's own spans, metrics and exception log records would double it.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.gateway = state
    routers = [module.router for module in (agents, environments, vaults, sessions, events, health_routes)]
    for router in routers:
        app.include_router(router)
    errors.install(app, routers=routers)
    # Added last = outermost: the request context wraps everything, the body cap sits inside it, and
    # the Idempotency-Key check inside that (it reads the capped body).
    app.add_middleware(IdempotencyMiddleware, state=state, wait_s=settings.store_timeout_s + 5.0)
    app.add_middleware(BodyLimitMiddleware, max_bytes=state.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app


async def _connect(stack: contextlib.AsyncExitStack, state: GatewayState) -> Bus | None:
    """Connect to NATS within ``startup_timeout_s``; ``None`` when a stop signal came first."""
    settings = state.settings
    connecting = asyncio.ensure_future(stack.enter_async_context(Bus.connect(settings.nats, name="gateway")))
    stopping = asyncio.ensure_future(state.stop_requested.wait())
    try:
        done, _ = await asyncio.wait(
            {connecting, stopping}, timeout=settings.startup_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stopping.cancel()
    if connecting in done:
        try:
            return connecting.result()
        except Exception as exc:
            logger.error("cannot connect to NATS at %s (CORRAL_NATS_URL): %s", settings.nats.url, exc)
            raise
    connecting.cancel()
    await asyncio.gather(connecting, return_exceptions=True)
    if stopping in done:
        logger.info("stopped before the bus connection was up")
        return None
    message = (
        f"NATS at {settings.nats.url} did not accept a connection within {settings.startup_timeout_s:g}s; "
        "check CORRAL_NATS_URL (or raise CORRAL_GATEWAY_STARTUP_TIMEOUT_S)"
    )
    logger.error(message)
    raise StartupFailed(message)
