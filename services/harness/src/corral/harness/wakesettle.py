"""Settling a wake-up: the backoff of one handed back, keeping a long run's message alive, and an
acknowledgement that fails (the message then comes back after the ack wait)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from corral.contracts import rpc
from corral.harness.lease import Sleep
from corral.harness.wakeports import WakeDelivery

logger = logging.getLogger(__name__)


def redelivery_delay(num_delivered: int) -> float:
    """Backoff for a wake-up handed back after a failure: 0.5 s doubling to 30 s."""
    return float(min(0.5 * 2 ** max(num_delivered - 1, 0), 30.0))


async def keep_alive(delivery: WakeDelivery, *, every_s: float, sleep: Sleep) -> None:
    """Push the message's ack deadline back every ``every_s`` until cancelled."""
    while True:
        await sleep(every_s)
        try:
            await delivery.in_progress()
        except Exception:
            logger.debug("in_progress failed", exc_info=True)


async def settle(step: Awaitable[None], *, wake: rpc.Wake | None) -> None:
    """Await an ack, nak or term; a failure is logged, not raised."""
    try:
        await step
    except Exception:
        session = wake.session_id if wake else None
        logger.warning(
            "could not settle a wake-up; it comes back after the ack wait",
            extra={"fields": {"session_id": session}},
            exc_info=True,
        )
