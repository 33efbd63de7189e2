"""The health protocol every service speaks: ``corral.health.<service>`` answered with a ``Health``
(the ``health_op(service)`` descriptor; ``Bus.call(health_op(service), HealthCheck())`` asks it)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

from corral.bus.client import Bus
from corral.bus.operations import Operations
from corral.contracts.health import Health, HealthCheck, health_op


def instance_name() -> str:
    """``<hostname>:<pid>``: how a process names itself in health answers and logs."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.asynccontextmanager
async def serve_health(bus: Bus, service: str, report: Callable[[], Awaitable[Health]]) -> AsyncIterator[None]:
    """Answer ``corral.health.<service>`` with ``report()`` while the block runs (one instance answers)."""

    async def answer(_request: HealthCheck) -> Health:
        return await report()

    async with Operations(service=service).handle(health_op(service), answer).serve(bus):
        yield
