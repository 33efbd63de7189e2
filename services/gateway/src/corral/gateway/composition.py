"""The gateway's composition root: the access log, the port (bound first: a busy port is a one-line
error naming ``CORRAL_GATEWAY_PORT``), the bus (within ``CORRAL_GATEWAY_STARTUP_TIMEOUT_S``, else
exit 3), its health answers, the API keys it follows from the catalog, and the idempotency bucket
(made with another TTL: refused, exit 2, like every service's settings), then the app under
uvicorn. A stop ends open event streams (or a pending NATS connect), stops accepting connections and
waits up to ``CORRAL_GATEWAY_SHUTDOWN_GRACE_S`` for requests in flight; the bus is drained after
uvicorn has stopped. Ready once uvicorn has started.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

import uvicorn

from corral.bus import Bus, StreamMismatch, instance_name, serve_health
from corral.contracts import subjects
from corral.contracts.health import Health
from corral.gateway import accesslog, keydirectory
from corral.gateway.app import create_app
from corral.gateway.connections import ConnectionLimits, limited_protocol
from corral.gateway.fanout import SessionFanout
from corral.gateway.feed import BusFeed
from corral.gateway.keydirectory import KeyDirectory
from corral.gateway.probe import BusProbe, gateway_health
from corral.gateway.repositories import BusRepositoryTokens
from corral.gateway.settings import Settings
from corral.gateway.state import Backends, state_of
from corral.gateway.store import BusStore
from corral.runner import Lifetime, Refused
from corral.runner.asgi import serve_asgi

logger = logging.getLogger(__name__)

#: Exit status when NATS does not accept a connection within ``startup_timeout_s``.
NO_BUS_EXIT_CODE = 3


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port``.

    Raises:
        Refused: (exit status 1) the port is taken or cannot be bound; the message says what to change.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
    # and without it keep-alive responses (headers, then body) stall ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is already in use; stop what holds it or set CORRAL_GATEWAY_PORT"
        else:
            message = f"cannot listen on {host}:{port} ({exc}); check CORRAL_GATEWAY_HOST and CORRAL_GATEWAY_PORT"
        raise Refused(message, exit_code=1) from None
    sock.set_inheritable(True)
    return sock


async def connect(settings: Settings, life: Lifetime) -> Bus | None:
    """The bus, connected within ``startup_timeout_s`` (drained when ``life`` ends); ``None`` when
    stopped first.

    Raises:
        Refused: (exit status 3) NATS did not accept a connection in time.
    """
    connecting = asyncio.ensure_future(life.stack.enter_async_context(Bus.connect(settings.nats, name="gateway")))
    stopping = asyncio.ensure_future(life.stop.wait())
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
    raise Refused(
        f"NATS at {settings.nats.url} did not accept a connection within {settings.startup_timeout_s:g}s; "
        "check CORRAL_NATS_URL (or raise CORRAL_GATEWAY_STARTUP_TIMEOUT_S)",
        exit_code=NO_BUS_EXIT_CODE,
    )


async def backends(settings: Settings, bus: Bus, life: Lifetime) -> Backends:
    """The bus adapters, the gateway's health answers, and the idempotency bucket (its owner).

    Raises:
        Refused: (exit status 2) the bucket exists with another configuration (another
            ``CORRAL_GATEWAY_IDEMPOTENCY_TTL_S``); the message names the difference and the fix.
    """
    instance = instance_name()

    async def report() -> Health:
        return gateway_health(instance, bus_connected=bus.connected)

    await life.stack.enter_async_context(serve_health(bus, "gateway", report))
    try:
        replies = await bus.ensure_key_value(subjects.idempotency_spec(settings.idempotency_ttl_s))
    except StreamMismatch as exc:
        raise Refused(str(exc)) from None
    directory = KeyDirectory()
    life.background(keydirectory.follow(bus, directory), name="api-keys")
    fanout = SessionFanout(bus)
    await fanout.start()  # before any stream opens: the follow begins at the stream's last sequence now
    life.background(fanout.run(), name="session-fanout")
    logger.info("gateway %s connected to the bus %s", instance, settings.nats.url)
    return Backends(
        store=BusStore(bus, timeout_s=settings.store_timeout_s),
        feed=BusFeed(bus, fanout),
        probe=BusProbe(bus),
        replies=replies,
        repositories=BusRepositoryTokens(bus),
        directory=directory,
    )


async def serve(settings: Settings, life: Lifetime) -> None:
    accesslog.install()
    sock = bind(settings.host, settings.port)
    life.stack.callback(sock.close)
    bus = await connect(settings, life)
    if bus is None:  # stopped while connecting
        return
    app = create_app(settings, backends=await backends(settings, bus, life))
    config = uvicorn.Config(
        app,
        log_config=None,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        lifespan="on",
        http=limited_protocol(
            ConnectionLimits(header_timeout_s=settings.header_timeout_s, per_client=settings.max_connections_per_client)
        ),
        timeout_keep_alive=settings.keep_alive_s,
    )
    serve_asgi(
        life,
        config,
        sockets=[sock],
        on_stop=state_of(app).request_stop,
        url=f"http://{settings.host}:{settings.port}",
    )
