"""Stopping a run's read of its session log, against a real nats-server.

A run follows its session's subject (an ordered consumer) while it holds the lease and stops the read
when it lets the session go; the next turn of the session waits for that. nats-py creates the
consumer with a request whose wait (``asyncio.wait_for`` on Python 3.11) drops a cancellation that
lands with the reply: the read then went on following, and stopping it took the 1 s retry of
``stop_reading`` (logged "did not stop when cancelled"), about one run in ten.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import pytest

from corral.bus import Bus
from corral.contracts.subjects import SESSIONS_SPEC, session_log
from corral.harness.fold import SessionFold
from corral.harness.sessionlog import BusLog, following
from corral.settings import NatsSettings

pytestmark = pytest.mark.integration

#: A stop that works ends in a few milliseconds; a lost cancellation never ends on its own (the
#: retry comes after 1 s). The bound leaves room for a loaded machine and still catches it.
STOP_BOUND_S = 0.5


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with Bus.connect(NatsSettings(url=nats_url), name="log-read-stop-tests") as b:
        await b.ensure_stream(SESSIONS_SPEC)
        yield b


async def test_a_log_read_stopped_at_any_moment_ends_at_once(bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    session_id = "sesn_read_stop"
    for i in range(3):
        event = {"type": "user.message", "id": f"u{i}", "content": [{"type": "text", "text": "hi"}]}
        await bus.publish(session_log(session_id), json.dumps(event).encode())
    source = BusLog(bus)
    slow: list[tuple[int, float]] = []
    caught_up = 0
    with caplog.at_level(logging.WARNING, logger="corral.harness.sessionlog"):
        for cycle in range(1000):
            fold = SessionFold.empty()
            block = following(source, session_id, fold, on_record=lambda _: None)
            log = await block.__aenter__()
            # Stop at a different moment each cycle: while the consumer is being created, as the
            # first records arrive, or once the read has caught up and waits for new ones.
            if cycle % 4 == 3:
                await log.reach(3)
                caught_up += 1
            elif cycle % 4 == 2:
                await asyncio.sleep((cycle % 40) / 10_000)
            else:
                for _ in range(cycle % 25):
                    await asyncio.sleep(0)
            started = time.monotonic()
            async with asyncio.timeout(10):  # a read that never stops fails here, not the suite
                await block.__aexit__(None, None, None)
            took = time.monotonic() - started
            if took > STOP_BOUND_S:
                slow.append((cycle, round(took, 3)))
    assert caught_up == 250
    assert slow == [], f"stopping the log read took longer than {STOP_BOUND_S} s (cycle, seconds): {slow}"
    assert "did not stop when cancelled" not in caplog.text
