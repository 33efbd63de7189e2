"""``ClientWatch``: following a server's ``receive`` without a task of its own."""

from __future__ import annotations

import asyncio
from typing import Any

from corral.gateway.disconnect import ClientWatch


class Server:
    """A ``receive`` shaped like uvicorn's: the request (an empty GET body) at once, then a wait on an
    event set when the connection is lost; ``yields`` bare ``sleep(0)`` steps before each wait (anyio's
    checkpoints)."""

    def __init__(self, *, yields: int = 0) -> None:
        self.lost = asyncio.Event()
        self.yields = yields
        self.requested = False
        self.closed = 0

    async def receive(self) -> dict[str, Any]:
        if not self.requested:
            self.requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        try:
            for _ in range(self.yields):
                await asyncio.sleep(0)
            await self.lost.wait()
        except GeneratorExit:
            self.closed += 1
            raise
        return {"type": "http.disconnect"}


class Wakes:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.event.set()

    async def next(self) -> None:
        await asyncio.wait_for(self.event.wait(), 5)
        self.event.clear()


async def test_the_watch_notices_the_client_leaving_and_wakes_its_stream() -> None:
    server, wakes = Server(), Wakes()
    watch = ClientWatch(server.receive, wakes)
    assert watch.poll() is False  # the request came and went; now waiting on the connection
    assert watch.poll() is False  # nothing new: still waiting, nothing stepped
    server.lost.set()
    await wakes.next()
    assert watch.poll() is True
    assert watch.gone
    watch.close()
    assert server.closed == 0  # the receive had finished: nothing left to close


async def test_bare_yields_inside_receive_are_stepped_on_later_rounds_of_the_loop() -> None:
    server, wakes = Server(yields=3), Wakes()
    watch = ClientWatch(server.receive, wakes)
    polls = 0
    while not watch.poll():
        polls += 1
        if server.lost.is_set():
            await wakes.next()
            continue
        if polls > 3:  # past the three yields: blocked on the event
            server.lost.set()
        await wakes.next()
    assert watch.gone
    assert polls >= 4


async def test_closing_the_watch_closes_the_pending_receive() -> None:
    server, wakes = Server(), Wakes()
    watch = ClientWatch(server.receive, wakes)
    assert watch.poll() is False
    watch.close()
    assert server.closed == 1
    server.lost.set()  # the event's waiter went with the closed receive: nothing wakes the stream
    await asyncio.sleep(0)
    assert not wakes.event.is_set()


async def test_a_receive_that_fails_counts_as_the_client_gone() -> None:
    async def broken() -> dict[str, Any]:
        raise RuntimeError("the server's receive failed")

    watch = ClientWatch(broken, lambda: None)
    assert watch.poll() is True
    assert watch.gone
