"""Answers ``corral.health.harness`` (queue group ``harness``: any one worker answers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from corral.bus import Bus
from corral.bus import serve_health as serve
from corral.contracts.health import Health
from corral.harness.turn import SessionDriver
from corral.harness.wake import WakeLoop


def report(
    *, worker_id: str, sessions: int, bus_connected: bool, model: str, counters: dict[str, str] | None = None
) -> Health:
    """The worker's health: it depends on NATS (log, leases, wake-ups) and on the model endpoint."""
    dependencies = {"nats": "ok" if bus_connected else "disconnected; reconnecting", "model": model}
    return Health(
        service="harness",
        instance=worker_id,
        status="ok" if all(state == "ok" for state in dependencies.values()) else "degraded",
        details={"sessions": str(sessions), **(counters or {})},
        dependencies=dependencies,
    )


def counters(loop: WakeLoop, driver: SessionDriver) -> dict[str, str]:
    """Wake-ups handed to this worker's own run of their session (``joined``); wake-ups that found a
    session leased and waited for it (``lease_waits``), that got it after waiting
    (``lease_handoffs``), were served by the holder (``lease_served``) or were handed back
    (``lease_handbacks``); sessions taken back right after letting them go (``retaken``) and taken
    over when their lease expired (``takeovers``); turns started after a wait for the lease to be
    let go (``handoff_turns``) or to expire (``takeover_turns``: a wake-up redelivered after its
    holder died); runs by where their fold came from (``resumed_<source>``)."""
    details = {
        "joined": str(loop.joined),
        "lease_waits": str(loop.lease_waits),
        "lease_handoffs": str(loop.lease_handoffs),
        "lease_handbacks": str(loop.lease_handbacks),
        "lease_served": str(loop.lease_served),
        "retaken": str(loop.retaken),
        "takeovers": str(loop.takeovers),
        "handoff_turns": str(driver.handoff_turns),
        "takeover_turns": str(driver.takeover_turns),
    }
    details.update({f"resumed_{source}": str(count) for source, count in sorted(driver.resumed.items())})
    return details


async def serve_health(
    bus: Bus,
    *,
    worker_id: str,
    loop: WakeLoop,
    driver: SessionDriver,
    stop: asyncio.Event,
    model_state: Callable[[], str],
) -> None:
    async def answer() -> Health:
        return report(
            worker_id=worker_id,
            sessions=len(loop.active),
            bus_connected=bus.connected,
            model=model_state(),
            counters=counters(loop, driver),
        )

    async with serve(bus, "harness", answer):
        await stop.wait()
