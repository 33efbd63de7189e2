"""A task cancelled while it waits on NATS stops, even when the reply lands in the same loop step.

nats-py waits with ``asyncio.wait_for``, which on Python 3.11 hands back a result that raced a
cancellation; these tests make exactly that race happen (the reply future is resolved and the
waiting task cancelled before the loop runs again).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral.bus import Bus
from corral.bus.cancellation import honouring_cancel
from corral.settings import NatsSettings


async def reply_and_cancel_together(task: asyncio.Task[Any], reply: asyncio.Future[Any], value: Any) -> None:
    await asyncio.sleep(0)  # the task is now waiting on the reply
    reply.set_result(value)
    task.cancel()


async def test_a_reply_that_races_a_cancel_does_not_swallow_it() -> None:
    reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    carried_on = False

    async def caller() -> None:
        nonlocal carried_on
        await honouring_cancel(asyncio.wait_for(reply, 5))
        carried_on = True

    task = asyncio.create_task(caller())
    await reply_and_cancel_together(task, reply, "reply")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not carried_on


async def test_without_a_cancel_the_result_is_returned() -> None:
    reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    reply.set_result("reply")
    assert await honouring_cancel(asyncio.wait_for(reply, 5)) == "reply"


async def test_cleanup_after_a_cancel_still_gets_its_result() -> None:
    started = asyncio.Event()
    got: list[str] = []

    async def worker() -> None:
        try:
            started.set()
            await asyncio.sleep(10)
        finally:
            done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            done.set_result("released")
            got.append(await honouring_cancel(asyncio.wait_for(done, 5)))

    task = asyncio.create_task(worker())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert got == ["released"]


async def test_a_timeout_that_races_the_reply_is_a_timeout() -> None:
    reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def caller() -> str:
        async with asyncio.timeout(0.05):
            return await honouring_cancel(asyncio.wait_for(reply, 5))

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.05)
    asyncio.get_running_loop().call_soon(reply.set_result, "late")
    with pytest.raises(TimeoutError):
        await task


class RacingNats:
    """Just enough of a nats-py client for ``Bus.request``: it waits like nats-py does."""

    max_payload = 1024 * 1024

    def __init__(self) -> None:
        self.reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def jetstream(self, **_: Any) -> object:
        return object()

    async def request(self, subject: str, data: bytes, *, timeout: float, headers: dict[str, str]) -> Any:
        return await asyncio.wait_for(self.reply, timeout)


class Reply:
    data = b"answer"


async def test_bus_request_cancelled_as_its_reply_arrives_raises_cancelled() -> None:
    nc = RacingNats()
    bus = Bus(nc, NatsSettings())  # type: ignore[arg-type]
    carried_on = False

    async def caller() -> None:
        nonlocal carried_on
        await bus.request("corral.rpc.test", b"{}")
        carried_on = True

    task = asyncio.create_task(caller())
    await reply_and_cancel_together(task, nc.reply, Reply())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not carried_on
