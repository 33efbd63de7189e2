"""The health protocol every service speaks: ``corral.health.<service>`` answered with a ``Health``."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

from corral.bus.client import Bus
from corral.contracts.rpc import Health
from corral.contracts.subjects import health


def instance_name() -> str:
    """``<hostname>:<pid>``: how a process names itself in health answers and logs."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.asynccontextmanager
async def serve_health(bus: Bus, service: str, report: Callable[[], Awaitable[Health]]) -> AsyncIterator[None]:
    """Answer ``corral.health.<service>`` with ``report()`` while the block runs (one instance answers)."""

    async def answer(_data: bytes, _headers: dict[str, str]) -> bytes:
        return (await report()).model_dump_json().encode()

    async with bus.serve(health(service), answer, queue=service):
        yield
