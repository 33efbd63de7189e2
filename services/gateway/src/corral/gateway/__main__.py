"""Entry point: ``python -m corral.gateway`` (or ``corral-gateway``).

Binds the port first (a busy port is a one-line error naming ``CORRAL_GATEWAY_PORT``), then runs
uvicorn. SIGTERM or SIGINT stops accepting connections, ends open event streams, waits up to
``CORRAL_GATEWAY_SHUTDOWN_GRACE_S`` for requests in flight, drains the bus and exits 0.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from types import FrameType

import uvicorn
from pydantic import ValidationError

from corral import telemetry
from corral.gateway import accesslog
from corral.gateway.app import create_app
from corral.gateway.connections import ConnectionLimits, limited_protocol
from corral.gateway.settings import Settings
from corral.gateway.state import GatewayState, state_of

logger = logging.getLogger("corral.gateway")


class GatewayServer(uvicorn.Server):
    """uvicorn, plus: a stop signal also ends the open SSE streams (or a pending NATS connect); exit status 0."""

    def __init__(self, config: uvicorn.Config, *, state: GatewayState) -> None:
        super().__init__(config)
        self._state = state
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super()._serve(sockets)
        # uvicorn re-raises the caught signal after a graceful shutdown (exit status 143 for
        # SIGTERM); the shutdown was clean, so say so.
        self._captured_signals.clear()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._state.request_stop)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port``, or exit 1 with one line saying what to change."""
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
            logger.error("port %d on %s is already in use; stop what holds it or set CORRAL_GATEWAY_PORT", port, host)
        else:
            logger.error(
                "cannot listen on %s:%d (%s); check CORRAL_GATEWAY_HOST and CORRAL_GATEWAY_PORT", host, port, exc
            )
        raise SystemExit(1) from None
    sock.set_inheritable(True)
    return sock


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        logging.basicConfig(format="%(message)s")
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        logger.error("invalid CORRAL_GATEWAY_* settings: %s", problems)
        raise SystemExit(2) from None
    telemetry.configure("gateway", logs=settings.log)
    accesslog.install()
    sock = bind(settings.host, settings.port)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        log_config=None,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        lifespan="on",
        http=limited_protocol(
            ConnectionLimits(header_timeout_s=settings.header_timeout_s, per_client=settings.max_connections_per_client)
        ),
        timeout_keep_alive=settings.keep_alive_s,
        loop="uvloop",
    )
    server = GatewayServer(config, state=state_of(app))
    try:
        server.run(sockets=[sock])
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
