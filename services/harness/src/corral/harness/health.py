"""Answers ``corral.health.harness`` (queue group ``harness``: any one worker answers)."""

from __future__ import annotations

import asyncio

from corral.bus import Bus
from corral.bus import serve_health as serve
from corral.contracts import rpc
from corral.harness.wake import WakeLoop


async def serve_health(bus: Bus, *, worker_id: str, loop: WakeLoop, stop: asyncio.Event) -> None:
    async def report() -> rpc.Health:
        return rpc.Health(
            service="harness", instance=worker_id, status="ok", details={"sessions": str(len(loop.active))}
        )

    async with serve(bus, "harness", report):
        await stop.wait()
