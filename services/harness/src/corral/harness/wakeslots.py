"""A worker's run slots: waiting for a free one (or the stop), fetching a wake-up for it, the runs in
flight and those queued for a slot, and letting the runs in flight finish at the stop, for at most
the shutdown grace."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from corral.harness.wakeports import WakeDelivery, WakeSource

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


async def fetch(source: WakeSource, stop: asyncio.Event, *, timeout_s: float) -> Sequence[WakeDelivery]:
    """The next wake-up (none when ``timeout_s`` passes first); a failed fetch is logged and, a second
    later (or at the stop), answered with none."""
    try:
        return await source.fetch(1, timeout=timeout_s)
    except Exception:
        logger.warning("fetching wake-ups failed; trying again shortly", exc_info=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await stop.wait()
        return []


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


class Runs:
    """The runs of one worker, tasks of its task group: each holds one of ``slots`` while it runs.

    ``start`` runs at once (the caller holds a slot for it and the run releases it); ``queue`` waits
    for a slot first. A queued run is cancelled at the stop until it has its slot (``cancel_queued``);
    from then on it is in ``inflight`` like any other, drained at the stop, not cancelled."""

    def __init__(self, tg: asyncio.TaskGroup, slots: asyncio.Semaphore) -> None:
        self._tg = tg
        self.slots = slots
        self.inflight: set[asyncio.Task[None]] = set()
        self._queued: set[asyncio.Task[None]] = set()

    def start(self, run: Awaitable[None], *, name: str | None = None) -> None:
        self._track(self._tg.create_task(self._releasing(run), name=name), self.inflight)

    def queue(self, run: Callable[[], Awaitable[None]], *, name: str) -> None:
        self._track(self._tg.create_task(self._when_free(run), name=name), self._queued)

    def cancel_queued(self) -> None:
        for task in self._queued:
            task.cancel()

    async def _releasing(self, run: Awaitable[None]) -> None:
        try:
            await run
        finally:
            self.slots.release()

    async def _when_free(self, run: Callable[[], Awaitable[None]]) -> None:
        await self.slots.acquire()
        task = asyncio.current_task()
        if task is not None:
            self._queued.discard(task)
            self._track(task, self.inflight)
        await self._releasing(run())

    @staticmethod
    def _track(task: asyncio.Task[None], tasks: set[asyncio.Task[None]]) -> None:
        tasks.add(task)
        task.add_done_callback(tasks.discard)
