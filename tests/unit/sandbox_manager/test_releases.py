"""The release consumer's handling of the session log's record headers, with fake deliveries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from corral.contracts import headers as h
from corral.contracts import subjects
from corral.sandbox_manager import releases


@dataclass
class Acks:
    log: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class FakeRecord:
    seq: int
    session_id: str
    type: str | None
    acks: Acks

    @property
    def subject(self) -> str:
        return subjects.session_log(self.session_id)

    @property
    def headers(self) -> dict[str, str]:
        return {h.RECORD_TYPE: self.type, "Nats-Msg-Size": "120"} if self.type else {"Nats-Msg-Size": "120"}

    async def ack(self) -> None:
        self.acks.log.append(("ack", self.seq))

    async def in_progress(self) -> None:
        self.acks.log.append(("progress", self.seq))


def records(acks: Acks, *kinds: tuple[str, str | None]) -> list[FakeRecord]:
    return [FakeRecord(seq, sid, kind, acks) for seq, (sid, kind) in enumerate(kinds, start=1)]


class Releaser:
    def __init__(self, failures: int = 0) -> None:
        self.released: list[tuple[str, str]] = []
        self.failures = failures

    async def __call__(self, session_id: str, reason: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("engine unreachable")
        self.released.append((session_id, reason))


async def test_only_archive_and_delete_marks_release_and_one_ack_covers_the_rest() -> None:
    acks = Acks()
    batch = records(
        acks,
        ("sesn_a", "user.message"),
        ("sesn_a", "agent.message"),
        ("sesn_a", "corral.session_archived"),
        ("sesn_b", "corral.session_created"),
        ("sesn_c", "corral.session_deleted"),
        ("sesn_b", None),  # a record written before records carried their type
        ("sesn_b", "session.status_idle"),
    )
    released = Releaser()
    assert await releases.handle(batch, released) == 2
    assert released.released == [("sesn_a", "archived"), ("sesn_c", "deleted")]
    # every record acknowledged, in order; a mark only after its release was done
    assert [a for a in acks.log if a[0] == "ack"] == [("ack", n) for n in range(1, 8)]
    assert acks.log.index(("progress", 3)) < acks.log.index(("ack", 3))
    assert acks.log.index(("progress", 5)) < acks.log.index(("ack", 5))


async def test_a_batch_without_an_ending_releases_nothing() -> None:
    acks = Acks()
    batch = records(acks, ("sesn_a", "user.message"), ("sesn_a", "session.status_running"))
    released = Releaser()
    assert await releases.handle(batch, released) == 0
    assert released.released == []
    assert acks.log == [("ack", 1), ("ack", 2)]


async def test_a_failing_release_is_retried_before_anything_later_is_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(releases, "_BACKOFF_S", (0.0,))
    acks = Acks()
    batch = records(acks, ("sesn_a", "corral.session_deleted"), ("sesn_b", "user.message"))
    released = Releaser(failures=2)
    assert await releases.handle(batch, released) == 1
    assert released.released == [("sesn_a", "deleted")]
    # the deadline was kept alive on each attempt; no ack until the release succeeded
    assert acks.log == [("progress", 1), ("progress", 1), ("progress", 1), ("ack", 1), ("ack", 2)]


async def test_a_release_failing_past_its_retry_window_is_given_up_and_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(releases, "_BACKOFF_S", (0.0,))
    acks = Acks()
    batch = records(acks, ("sesn_a", "corral.session_archived"))
    released = Releaser(failures=1_000_000)
    assert await releases.handle(batch, released, retry_for_s=0.0) == 1
    assert released.released == []
    assert acks.log == [("progress", 1), ("ack", 1)]


class FakeFeed:
    def __init__(self, batches: list[Sequence[releases.Record]]) -> None:
        self.batches = batches
        self.drained = asyncio.Event()
        self.closed = False

    async def fetch(self, batch: int = 1, *, timeout: float = 5.0) -> Sequence[releases.Record]:
        if self.batches:
            return self.batches.pop(0)
        self.drained.set()
        await asyncio.sleep(3600)
        return []

    async def close(self) -> None:
        self.closed = True


async def test_follow_waits_for_the_consumer_then_releases_what_it_reads() -> None:
    acks = Acks()
    feed = FakeFeed([records(acks, ("sesn_a", "corral.session_deleted"))])
    binds: list[int] = []

    async def bind() -> FakeFeed | None:
        binds.append(1)
        if len(binds) == 1:
            return None  # the session-store has not created it yet
        if len(binds) == 2:
            raise ConnectionError("bus reconnecting")
        return feed

    released = Releaser()
    task = asyncio.create_task(releases.follow(bind, released, wait_s=0.0))
    try:
        async with asyncio.timeout(5):
            await feed.drained.wait()
    finally:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert len(binds) == 3
    assert released.released == [("sesn_a", "deleted")]
    assert feed.closed  # unsubscribed when the follow ends, before the connection drains
    assert ("ack", 1) in acks.log


class TimedFeed:
    """Hands out ``batches`` in order, noting the loop time of each fetch; then waits forever."""

    def __init__(self, batches: list[Sequence[releases.Record]]) -> None:
        self.batches = batches
        self.at: list[float] = []
        self.drained = asyncio.Event()

    async def fetch(self, batch: int = 1, *, timeout: float = 5.0) -> Sequence[releases.Record]:
        self.at.append(asyncio.get_running_loop().time())
        if self.batches:
            return self.batches.pop(0)
        self.drained.set()
        await asyncio.sleep(3600)
        return []


async def follow_until_drained(feed: TimedFeed, linger_s: float) -> None:
    async def bind() -> TimedFeed:
        return feed

    task = asyncio.create_task(releases.follow(bind, Releaser(), wait_s=0.0, linger_s=linger_s))
    try:
        async with asyncio.timeout(5):
            await feed.drained.wait()
    finally:
        task.cancel()


async def test_follow_pauses_after_a_partial_batch_so_the_next_fetch_takes_what_came_meanwhile() -> None:
    acks = Acks()
    feed = TimedFeed([records(acks, ("sesn_a", "session.status_idle"))])
    await follow_until_drained(feed, linger_s=0.2)
    assert feed.at[1] - feed.at[0] >= 0.19


async def test_follow_fetches_again_at_once_after_an_empty_or_a_full_batch() -> None:
    acks = Acks()
    full = records(acks, *[("sesn_a", "agent.message")] * releases.BATCH)
    feed = TimedFeed([[], full])
    await follow_until_drained(feed, linger_s=3600)  # a pause would outlast the 5 s this allows
    assert len(feed.at) == 3
