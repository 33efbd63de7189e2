"""Answers ``corral.health.harness`` (queue group ``harness``: any one worker answers)."""

from __future__ import annotations

import asyncio

from corral.bus import Bus
from corral.bus import serve_health as serve
from corral.contracts import rpc
from corral.harness.turn import SessionDriver
from corral.harness.wake import WakeLoop


async def serve_health(bus: Bus, *, worker_id: str, loop: WakeLoop, driver: SessionDriver, stop: asyncio.Event) -> None:
    """Details: ``sessions`` running now; wake-ups handed to this worker's own run of their session
    (``joined``); wake-ups that found a session leased and waited for it (``lease_waits``), that got
    it after waiting (``lease_handoffs``) or were handed back (``lease_handbacks``); turns started
    after such a wait (``handoff_turns``); runs by where their fold came from (``resumed_<source>``)."""

    async def report() -> rpc.Health:
        details = {
            "sessions": str(len(loop.active)),
            "joined": str(loop.joined),
            "lease_waits": str(loop.lease_waits),
            "lease_handoffs": str(loop.lease_handoffs),
            "lease_handbacks": str(loop.lease_handbacks),
            "handoff_turns": str(driver.handoff_turns),
        }
        details.update({f"resumed_{source}": str(count) for source, count in sorted(driver.resumed.items())})
        return rpc.Health(service="harness", instance=worker_id, status="ok", details=details)

    async with serve(bus, "harness", report):
        await stop.wait()
