from __future__ import annotations

import asyncio

import pytest

from corral.harness.interrupts import Stop, unless_interrupted


async def test_the_work_result_when_no_interrupt_comes() -> None:
    async def work() -> str:
        return "done"

    assert await unless_interrupted(work(), asyncio.Event()) == "done"


async def test_an_interrupt_cancels_the_work_and_waits_for_it_to_stop() -> None:
    interrupted = asyncio.Event()
    started = asyncio.Event()
    stopped: list[str] = []

    async def work() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits: it must finish before the race returns
            stopped.append("cleaned up")
        return "never"

    racing = asyncio.create_task(unless_interrupted(work(), interrupted))
    await started.wait()
    interrupted.set()

    assert await racing is Stop.INTERRUPTED
    assert stopped == ["cleaned up"]


async def test_an_interrupt_set_before_the_race_stops_it_at_once() -> None:
    interrupted = asyncio.Event()
    interrupted.set()

    assert await unless_interrupted(asyncio.Event().wait(), interrupted) is Stop.INTERRUPTED


async def test_an_error_of_the_work_is_raised() -> None:
    async def work() -> str:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await unless_interrupted(work(), asyncio.Event())


async def test_cancelling_the_race_cancels_the_work() -> None:
    started = asyncio.Event()
    work_cancelled = asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            work_cancelled.set()
            raise

    racing = asyncio.create_task(unless_interrupted(work(), asyncio.Event()))
    await started.wait()
    racing.cancel()

    with pytest.raises(asyncio.CancelledError):
        await racing
    assert work_cancelled.is_set()
