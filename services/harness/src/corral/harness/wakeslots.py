"""A worker's run slots: waiting for a free one (or the stop), and letting the runs in flight
finish at the stop, for at most the shutdown grace."""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger(__name__)


async def take_slot(slots: asyncio.Semaphore, stopping: asyncio.Task[bool]) -> bool:
    """A free slot (``True``, held by the caller), or ``False`` when ``stopping`` came first."""
    if stopping.done():
        return False
    acquiring = asyncio.ensure_future(slots.acquire())
    await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not acquiring.done():
        acquiring.cancel()
        await asyncio.wait({acquiring})
    if acquiring.cancelled():
        return False
    if stopping.done():
        slots.release()
        return False
    return True


async def drain(inflight: set[asyncio.Task[None]], *, grace_s: float, active: set[str]) -> None:
    """Let the runs in ``inflight`` finish within ``grace_s``; cancel those that do not."""
    if not inflight:
        return
    logger.info(
        "stopping: letting running sessions finish", extra={"fields": {"sessions": sorted(active), "grace_s": grace_s}}
    )
    _done, unfinished = await asyncio.wait(set(inflight), timeout=grace_s)
    for task in unfinished:
        task.cancel()
