"""The gateway's composition root: the access log, the port (bound first: a busy port is a one-line
error naming ``CORRAL_GATEWAY_PORT``), then the app under uvicorn. A stop ends open event streams (or
a pending NATS connect), stops accepting connections and waits up to ``CORRAL_GATEWAY_SHUTDOWN_GRACE_S``
for requests in flight; the lifespan then drains the bus. Ready once uvicorn has started, which is
after the lifespan has connected the bus.
"""

from __future__ import annotations

import errno
import socket

import uvicorn

from corral.gateway import accesslog
from corral.gateway.app import create_app
from corral.gateway.connections import ConnectionLimits, limited_protocol
from corral.gateway.settings import Settings
from corral.gateway.state import state_of
from corral.runner import Lifetime, Refused
from corral.runner.asgi import serve_asgi


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


async def serve(settings: Settings, life: Lifetime) -> None:
    accesslog.install()
    sock = bind(settings.host, settings.port)
    life.stack.callback(sock.close)
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
    )
    serve_asgi(
        life,
        config,
        sockets=[sock],
        on_stop=state_of(app).request_stop,
        url=f"http://{settings.host}:{settings.port}",
    )
