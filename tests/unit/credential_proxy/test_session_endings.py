"""The credential-proxy closes a session's MCP connections on its archive mark or tombstone, and
acknowledges every record it reads (the others without closing anything)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from corral.contracts import headers as h
from corral.contracts import subjects
from corral.credential_proxy import session_endings


@dataclass
class FakeRecord:
    subject: str
    headers: dict[str, str] = field(default_factory=dict)
    acked: bool = False

    async def ack(self) -> None:
        self.acked = True


def record(session_id: str, kind: str) -> FakeRecord:
    return FakeRecord(subjects.session_log(session_id), {h.RECORD_TYPE: kind})


async def test_archive_and_delete_marks_close_the_sessions_connections_and_every_record_is_acknowledged() -> None:
    closed: list[str] = []

    async def close(session_id: str) -> int:
        closed.append(session_id)
        return 1

    records = [
        record("sesn_a", "agent.message"),
        record("sesn_a", "corral.session_archived"),
        record("sesn_b", "session.status_idle"),
        record("sesn_c", "corral.session_deleted"),
        FakeRecord(subjects.session_log("sesn_d")),  # no type header: nothing to do
    ]
    assert await session_endings.handle(records, close) == 2
    assert closed == ["sesn_a", "sesn_c"]
    assert all(r.acked for r in records)


class EndlessFeed:
    """A consumer with nothing to hand out: every fetch waits until cancelled."""

    def __init__(self) -> None:
        self.fetching = asyncio.Event()
        self.closed = False

    async def fetch(self, batch: int = 1, *, timeout: float = 5.0) -> list[FakeRecord]:
        self.fetching.set()
        await asyncio.sleep(3600)
        return []

    async def close(self) -> None:
        self.closed = True


async def test_the_follow_closes_its_consumer_when_cancelled() -> None:
    """At shutdown the consumer is unsubscribed before the connection drains (a pull subscription
    left open can hold the drain until its timeout)."""
    feed = EndlessFeed()

    async def bind() -> EndlessFeed:
        return feed

    async def close(session_id: str) -> int:
        return 0

    task = asyncio.create_task(session_endings.follow(bind, close))
    async with asyncio.timeout(5):
        await feed.fetching.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert feed.closed


class TimedFeed:
    """Hands out ``batches`` in order, noting the loop time of each fetch; then waits forever."""

    def __init__(self, batches: list[Sequence[session_endings.Record]]) -> None:
        self.batches = batches
        self.at: list[float] = []
        self.drained = asyncio.Event()

    async def fetch(self, batch: int = 1, *, timeout: float = 5.0) -> Sequence[session_endings.Record]:
        self.at.append(asyncio.get_running_loop().time())
        if self.batches:
            return self.batches.pop(0)
        self.drained.set()
        await asyncio.sleep(3600)
        return []

    async def close(self) -> None:
        pass


async def follow_until_drained(feed: TimedFeed, linger_s: float) -> None:
    async def bind() -> TimedFeed:
        return feed

    async def close(session_id: str) -> int:
        return 0

    task = asyncio.create_task(session_endings.follow(bind, close, wait_s=0.0, linger_s=linger_s))
    try:
        async with asyncio.timeout(5):
            await feed.drained.wait()
    finally:
        task.cancel()


async def test_follow_pauses_after_a_partial_batch_so_the_next_fetch_takes_what_came_meanwhile() -> None:
    feed = TimedFeed([[record("sesn_a", "session.status_idle")]])
    await follow_until_drained(feed, linger_s=0.2)
    assert feed.at[1] - feed.at[0] >= 0.19


async def test_follow_fetches_again_at_once_after_an_empty_or_a_full_batch() -> None:
    full = [record("sesn_a", "agent.message") for _ in range(session_endings.BATCH)]
    feed = TimedFeed([[], full])
    await follow_until_drained(feed, linger_s=3600)  # a pause would outlast the 5 s this allows
    assert len(feed.at) == 3
