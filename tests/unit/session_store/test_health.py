"""The session-store's health answer while JetStream does not answer (a node killed, a stream electing
its leader): it answers in time, ``degraded``, saying what is wrong, instead of failing the request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

from corral.bus import Bus
from corral.session_store import health


class Answering:
    """A pool whose connection answers ``SELECT 1``."""

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async def fetchval(_query: str) -> int:
            return 1

        yield SimpleNamespace(fetchval=fetchval)


class FakeBus:
    def __init__(self, *, answers: bool) -> None:
        self.connected = True
        self.answers = answers

    async def stream_last_seq(self, _stream: str) -> int:
        if not self.answers:
            await asyncio.Event().wait()  # the request's own timeout is longer than the health deadline
        return 12


PROJECTOR = SimpleNamespace(failing=False, errors=0, last_error=None, projecting=True, position=lambda _stream: 10)


async def _report(bus: FakeBus) -> Any:
    return await health.report(cast(Bus, bus), cast(Any, Answering()), cast(Any, PROJECTOR), instance="store-1")


async def test_a_store_whose_jetstream_answers_is_ok_with_its_lags() -> None:
    answer = await _report(FakeBus(answers=True))
    assert answer.status == "ok"
    assert answer.dependencies["nats"] == "ok"
    assert (answer.details["lag_sessions"], answer.details["lag_catalog"]) == ("2", "2")


async def test_a_store_whose_jetstream_does_not_answer_answers_degraded_in_time() -> None:
    async with asyncio.timeout(health.PROBE_TIMEOUT_S + 0.5):  # before the gateway's 1 s health deadline
        answer = await _report(FakeBus(answers=False))
    assert answer.status == "degraded"
    assert "JetStream did not answer" in answer.dependencies["nats"]
    assert "lag_sessions" not in answer.details
