"""Appends another writer got in before.

One stored one record at a time (the harness's) and interrupted after a prefix is refused with
``append_interrupted``, not decided again: the prefix is in the log, and its status steps checked a
second time would be refused as illegal. A client's records (retried by message id, the stored ones
acknowledged) are decided again. A harness's append fenced out reads its lease again first."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from corral.bus import OutgoingRecord, PartlyStored, PubAck, StoredMessage, WrongLastSequence
from corral.contracts.api.errors import ApiError
from corral.session_store.log import SessionLog

FIXTURES = Path(__file__).parents[3] / "proto" / "fixtures" / "session"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name / "v1" / "basic.json").read_text())
    return data


class _EmptyRead:
    tail_seq = 0

    def __aiter__(self) -> AsyncIterator[StoredMessage]:
        return self._none()

    async def _none(self) -> AsyncIterator[StoredMessage]:
        return
        yield


class InterruptedOnce:
    """A bus whose first append stores one record and is then fenced out (``PartlyStored``)."""

    def __init__(self) -> None:
        self.appends: list[bool] = []

    async def publish_batch(
        self, subject: str, batch: Sequence[OutgoingRecord], *, expected_last_subject_seq: int | None, atomic: bool
    ) -> list[PubAck]:
        self.appends.append(atomic)
        if len(self.appends) == 1:
            raise PartlyStored(f"wrong last sequence after 1 of {len(batch)} records", stored=1)
        return [PubAck(seq=10 + i, duplicate=False) for i in range(len(batch))]

    def read(self, stream: str, subject: str) -> _EmptyRead:
        return _EmptyRead()


def records() -> list[dict[str, Any]]:
    return [fixture("user.message"), fixture("user.message")]


async def test_an_append_stored_one_record_at_a_time_and_interrupted_midway_is_refused_not_decided_again() -> None:
    bus = InterruptedOnce()
    log = SessionLog(bus, cache_size=4)  # type: ignore[arg-type]
    decided = 0

    def decide(_state: object) -> list[dict[str, Any]]:
        nonlocal decided
        decided += 1
        return records()

    with pytest.raises(ApiError) as refused:
        await log.append("sesn_1", decide, new=True, atomic=False)
    assert refused.value.error_code == "append_interrupted" and refused.value.status == 409
    assert decided == 1 and bus.appends == [False]


async def test_a_clients_append_interrupted_midway_is_decided_again_and_stored() -> None:
    bus = InterruptedOnce()
    log = SessionLog(bus, cache_size=4)  # type: ignore[arg-type]
    _, stored = await log.append("sesn_1", lambda _state: records(), new=True, atomic=True)
    assert [s.seq for s in stored] == [10, 11] and bus.appends == [True, True]


class FencedOutOnce(InterruptedOnce):
    """A bus whose first append is fenced out before anything is stored (someone else wrote)."""

    async def publish_batch(
        self, subject: str, batch: Sequence[OutgoingRecord], *, expected_last_subject_seq: int | None, atomic: bool
    ) -> list[PubAck]:
        self.appends.append(atomic)
        if len(self.appends) == 1:
            raise WrongLastSequence("wrong last sequence")
        return [PubAck(seq=10 + i, duplicate=False) for i in range(len(batch))]


async def test_a_harness_append_reads_its_lease_again_when_another_writer_got_in_first() -> None:
    """The writer that got in first may be the harness that took the lease over after this append's
    lease was read: deciding again without reading it again would store a late holder's records
    after the new holder's."""
    bus = FencedOutOnce()
    log = SessionLog(bus, cache_size=4)  # type: ignore[arg-type]
    checks = 0

    async def taken_over_meanwhile() -> None:
        nonlocal checks
        checks += 1
        if checks > 1:
            raise ApiError("conflict_error", "the lease is no longer held", error_code="lease_lost")

    with pytest.raises(ApiError) as refused:
        await log.append("sesn_1", lambda _state: records(), new=True, atomic=False, check=taken_over_meanwhile)
    assert refused.value.error_code == "lease_lost"
    assert checks == 2 and bus.appends == [False]  # read again once, and nothing appended after


class Ordered:
    """A bus that stores every append, noting when; ``hold_next``: the next append waits in its
    round trip (``publishing`` set) until ``release``."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen
        self.seq = 0
        self.hold_next = False
        self.publishing = asyncio.Event()
        self.release = asyncio.Event()

    async def publish_batch(
        self, subject: str, batch: Sequence[OutgoingRecord], *, expected_last_subject_seq: int | None, atomic: bool
    ) -> list[PubAck]:
        if self.hold_next:
            self.hold_next = False
            self.publishing.set()
            await self.release.wait()
        self.seen.append("stored")
        self.seq += len(batch)
        return [PubAck(seq=self.seq - len(batch) + 1 + i, duplicate=False) for i in range(len(batch))]


async def test_a_harness_append_reads_its_lease_under_the_sessions_lock_after_the_append_before_it() -> None:
    """A late holder's append that arrives while the new holder's first append is being stored reads
    the lease only once that append is stored: it finds the new holder's lease, not its own."""
    seen: list[str] = []
    bus = Ordered(seen)
    log = SessionLog(bus, cache_size=4)  # type: ignore[arg-type]
    await log.append("sesn_1", lambda _state: records()[:1], new=True)

    def check(who: str) -> Callable[[], Awaitable[None]]:
        async def read() -> None:
            seen.append(f"{who} lease read")

        return read

    async def late_holder() -> None:
        await bus.publishing.wait()  # the new holder's append is being stored
        # its round trip ends once this append has gone as far as it can (queued for the lock)
        asyncio.get_running_loop().call_soon(bus.release.set)
        await log.append("sesn_1", lambda _state: records()[:1], atomic=False, check=check("late holder"))

    seen.clear()
    bus.hold_next = True
    async with asyncio.timeout(5):
        await asyncio.gather(
            log.append("sesn_1", lambda _state: records()[:1], atomic=False, check=check("new holder")),
            late_holder(),
        )
    assert seen == ["new holder lease read", "stored", "late holder lease read", "stored"]
