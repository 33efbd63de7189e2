"""Answers ``corral.health.harness`` (queue group ``harness``: any one worker answers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from corral.bus import Bus
from corral.bus import serve_health as serve
from corral.contracts import rpc
from corral.harness.wake import WakeLoop


def report(*, worker_id: str, sessions: int, bus_connected: bool, model: str) -> rpc.Health:
    """The worker's health: it depends on NATS (log, leases, wake-ups) and on the model endpoint."""
    dependencies = {"nats": "ok" if bus_connected else "disconnected; reconnecting", "model": model}
    return rpc.Health(
        service="harness",
        instance=worker_id,
        status="ok" if all(state == "ok" for state in dependencies.values()) else "degraded",
        details={"sessions": str(sessions)},
        dependencies=dependencies,
    )


async def serve_health(
    bus: Bus, *, worker_id: str, loop: WakeLoop, stop: asyncio.Event, model_state: Callable[[], str]
) -> None:
    async def answer() -> rpc.Health:
        return report(worker_id=worker_id, sessions=len(loop.active), bus_connected=bus.connected, model=model_state())

    async with serve(bus, "harness", answer):
        await stop.wait()
