"""The wake-ups appends cause are stored after their replies, by one task: each is kept until the bus
stores it, a newer one for a session replaces one still waiting, and at shutdown what waits is sent
for a while, then left to the start-up sweep. Any error but the bus not answering ends the task."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from opentelemetry import context as otel_context

from corral.bus import StreamUnavailable
from corral.session_store import wakesender
from corral.session_store.wakesender import WakeSender


class Bus:
    """Stores publishes; ``away`` publishes in a row are not answered; ``broken`` raises a bug."""

    def __init__(self, *, away: int = 0, broken: bool = False) -> None:
        self.away = away
        self.broken = broken
        self.stored: list[tuple[str, dict[str, Any], str | None]] = []
        self.contexts: list[object] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.asked = asyncio.Event()
        """Set by the first publish, before it waits at the gate."""

    async def publish(self, subject: str, data: bytes, *, msg_id: str | None = None) -> None:
        self.asked.set()
        await self.gate.wait()
        self.contexts.append(otel_context.get_value("request"))
        if self.broken:
            raise ValueError("a bug")
        if self.away > 0:
            self.away -= 1
            raise StreamUnavailable("CORRAL_WAKE")
        self.stored.append((subject, json.loads(data), msg_id))


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wakesender, "RETRY_S", (0.001, 0.004))


def sender(bus: Bus, *, drain_s: float = 5.0) -> WakeSender:
    fake: Any = bus
    return WakeSender(fake, drain_s=drain_s)


async def test_a_wake_up_is_stored_with_its_message_id_and_the_task_ends_after_close() -> None:
    bus = Bus()
    wakes = sender(bus)
    running = asyncio.create_task(wakes.run())
    wakes.send("sesn_1", 7, "input")
    wakes.close()
    async with asyncio.timeout(5):
        await running
    assert bus.stored == [
        ("corral.wake.sesn_1", {"session_id": "sesn_1", "seq": 7, "reason": "input"}, "wake:sesn_1:7"),
    ]
    assert wakes.waiting == 0


async def test_a_newer_wake_up_replaces_one_still_waiting_and_an_older_one_does_not() -> None:
    bus = Bus()
    bus.gate.clear()  # the first round is out, held by the bus
    wakes = sender(bus)
    running = asyncio.create_task(wakes.run())
    wakes.send("sesn_1", 3, "input")
    async with asyncio.timeout(5):
        await bus.asked.wait()
    wakes.send("sesn_1", 5, "input")
    wakes.send("sesn_1", 9, "input")
    wakes.send("sesn_1", 8, "input")
    wakes.send("sesn_2", 4, "initial_events")
    assert wakes.waiting == 2
    bus.gate.set()
    wakes.close()
    async with asyncio.timeout(5):
        await running
    assert [(m["session_id"], m["seq"]) for _, m, _ in bus.stored] == [("sesn_1", 3), ("sesn_1", 9), ("sesn_2", 4)]


async def test_wake_ups_the_bus_did_not_store_are_asked_again_until_it_does() -> None:
    bus = Bus(away=3)
    wakes = sender(bus)
    running = asyncio.create_task(wakes.run())
    wakes.send("sesn_1", 7, "input")
    wakes.close()  # within drain_s: asked again as before
    async with asyncio.timeout(5):
        await running
    assert [m["seq"] for _, m, _ in bus.stored] == [7]
    assert bus.away == 0


async def test_at_shutdown_with_the_bus_away_what_waits_is_left_to_the_sweep(caplog: pytest.LogCaptureFixture) -> None:
    bus = Bus(away=10_000)
    wakes = sender(bus, drain_s=0.05)
    running = asyncio.create_task(wakes.run())
    wakes.send("sesn_1", 7, "input")
    wakes.close()
    async with asyncio.timeout(5):
        await running
    assert bus.stored == [] and wakes.waiting == 1
    assert "start-up sweep" in caplog.text


async def test_an_error_that_is_not_the_bus_away_ends_the_task() -> None:
    wakes = sender(Bus(broken=True))
    running = asyncio.create_task(wakes.run())
    wakes.send("sesn_1", 7, "input")
    with pytest.raises(ExceptionGroup) as ended:
        async with asyncio.timeout(5):
            await running
    assert ended.group_contains(ValueError)


async def test_a_wake_up_is_stored_in_the_context_of_the_append_that_caused_it() -> None:
    bus = Bus()
    wakes = sender(bus)
    running = asyncio.create_task(wakes.run())
    token = otel_context.attach(otel_context.set_value("request", "the append's"))
    try:
        wakes.send("sesn_1", 7, "input")
    finally:
        otel_context.detach(token)
    wakes.close()
    async with asyncio.timeout(5):
        await running
    assert bus.contexts == ["the append's"]
