"""Answers ``corral.health.harness`` (queue group ``harness``: any one worker answers)."""

from __future__ import annotations

import asyncio

from corral.bus import Bus
from corral.contracts import rpc, subjects
from corral.harness.wake import WakeLoop


async def serve_health(bus: Bus, *, worker_id: str, loop: WakeLoop, stop: asyncio.Event) -> None:
    async def answer(_data: bytes, _headers: dict[str, str]) -> bytes:
        health = rpc.Health(
            service="harness", instance=worker_id, status="ok", details={"sessions": str(len(loop.active))}
        )
        return health.model_dump_json().encode()

    async with bus.serve(subjects.health("harness"), answer, queue="harness"):
        await stop.wait()
