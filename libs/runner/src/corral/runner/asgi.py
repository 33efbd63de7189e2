"""An ASGI app served by uvicorn inside a service's ``Lifetime``.

uvicorn's ``Server.run`` owns the event loop and the signals; here ``Server.serve()`` runs in the
service's task group instead, with uvicorn's own signal handling off: the runner's stop event stops
it (graceful shutdown, ``timeout_graceful_shutdown`` for open requests), and the service is ready once
uvicorn has started (its lifespan done, its sockets listening).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn

from corral.runner.lifetime import Lifetime


class Server(uvicorn.Server):
    """uvicorn without its signal handlers (the runner has them), saying when it has started."""

    def __init__(self, config: uvicorn.Config, *, started: Callable[[], None]) -> None:
        super().__init__(config)
        self._started = started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._started()


def serve_asgi(
    life: Lifetime,
    config: uvicorn.Config,
    *,
    sockets: list[socket.socket] | None = None,
    on_stop: Callable[[], None] | None = None,
    **ready_fields: object,
) -> Server:
    """Serve ``config``'s app in ``life`` until its stop event (then ``on_stop``, then uvicorn's shutdown).

    ``life.ready(**ready_fields)`` once uvicorn has started. A server that ends by itself ends the service.
    """

    server = Server(config, started=lambda: life.ready(**ready_fields))

    async def serving() -> None:
        try:
            await server.serve(sockets=sockets)
        finally:
            life.stop.set()

    async def stopping() -> None:
        await life.stop.wait()
        if on_stop is not None:
            on_stop()
        server.should_exit = True

    life.tasks.create_task(serving(), name="asgi-server")
    life.tasks.create_task(stopping(), name="asgi-stop")
    return server
