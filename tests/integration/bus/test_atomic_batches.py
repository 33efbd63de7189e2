"""Several records in one JetStream atomic batch (``Bus.publish_batch``) on a real nats-server:
stored whole and in order, fenced once, all or none; records larger than a message among them."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import nats
import pytest

from corral.bus import Bus, OutgoingRecord, PartlyStored, StreamMismatch, WrongLastSequence
from corral.contracts import headers as h
from corral.contracts.subjects import SESSIONS_SPEC, StreamSpec
from corral.settings import NatsSettings

pytestmark = pytest.mark.integration

CHUNK = 1024


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A bus that stores records over 1 KiB in parts, so a test needs only a few KiB per record."""
    async with Bus.connect(NatsSettings(url=nats_url, record_chunk_bytes=CHUNK), name="atomic-batches") as b:
        yield b


@pytest.fixture
async def stream(bus: Bus, request: pytest.FixtureRequest) -> str:
    name = "T_" + request.node.name.upper().replace("[", "_").replace("]", "")[:40]
    await bus.ensure_stream(SESSIONS_SPEC.model_copy(update={"name": name, "subjects": (f"{name.lower()}.*",)}))
    return name


def blob(size: int) -> bytes:
    return os.urandom(size // 2).hex().encode()[:size]


def outgoing(datas: list[bytes], key: str | None = None) -> list[OutgoingRecord]:
    return [OutgoingRecord(d, {"T-Index": str(i)}, f"{key}:{i}" if key else None) for i, d in enumerate(datas)]


async def test_a_batch_is_stored_whole_in_order_with_its_large_records_read_back_whole(bus: Bus, stream: str) -> None:
    subject = f"{stream.lower()}.a"
    datas = [b"small-0", blob(3 * CHUNK + 17), b"small-2", blob(CHUNK * 2), b"small-4"]
    first = await bus.publish(subject, b"before")
    acks = await bus.publish_batch(subject, outgoing(datas), expected_last_subject_seq=first.seq)
    # one batch: consecutive sequences right after the fence, the ack of a record in parts its last part's
    assert [a.seq for a in acks] == [first.seq + n for n in (1, 5, 6, 8, 9)]
    assert [a.first_seq for a in acks] == [None, first.seq + 2, None, first.seq + 7, None]
    got = [m async for m in bus.read(stream, subject, after_seq=first.seq)]
    assert [m.data for m in got] == datas
    assert [m.headers["T-Index"] for m in got] == ["0", "1", "2", "3", "4"]
    # a record in parts is found whole from its last part, and by a reader that starts mid-record
    assert (await bus.get(stream, acks[1].seq)).data == datas[1]
    mid = [m async for m in bus.read(stream, subject, after_seq=first.seq + 3)]
    assert [m.data for m in mid] == datas[1:]


async def test_a_batch_that_loses_the_fence_stores_none_of_its_records(bus: Bus, stream: str) -> None:
    subject = f"{stream.lower()}.a"
    seen = await bus.publish(subject, b"seen")
    moved = await bus.publish(subject, b"written by another", expected_last_subject_seq=seen.seq)
    with pytest.raises(WrongLastSequence):
        await bus.publish_batch(subject, outgoing([b"a", blob(2 * CHUNK), b"c"]), expected_last_subject_seq=seen.seq)
    assert await bus.last_seq(stream, subject) == moved.seq
    assert await bus.stream_last_seq(stream) == moved.seq


async def test_a_retried_batch_is_stored_once_and_its_new_records_after(bus: Bus, stream: str) -> None:
    subject = f"{stream.lower()}.a"
    key = uuid.uuid4().hex
    datas = [b"one", blob(2 * CHUNK), b"three"]
    acks = await bus.publish_batch(subject, outgoing(datas, key), expected_last_subject_seq=0)
    again = await bus.publish_batch(subject, outgoing([*datas, b"four"], key), expected_last_subject_seq=acks[-1].seq)
    # the server refuses a batch holding a stored id whole; the records then go one by one
    assert [(a.seq, a.duplicate) for a in again[:3]] == [(a.seq, True) for a in acks]
    assert again[3].duplicate is False and again[3].seq == acks[-1].seq + 1
    assert [m.data async for m in bus.read(stream, subject)] == [*datas, b"four"]


async def test_records_stored_one_at_a_time_are_in_order_whole_and_stored_once_when_retried(
    bus: Bus, stream: str
) -> None:
    """``atomic=False``: no batch (the server stages none), each record fenced on the one before."""
    subject = f"{stream.lower()}.a"
    key = uuid.uuid4().hex
    datas = [b"one", blob(2 * CHUNK), b"three"]
    acks = await bus.publish_batch(subject, outgoing(datas, key), expected_last_subject_seq=0, atomic=False)
    assert [a.seq for a in acks] == [1, 3, 4] and acks[1].first_seq == 2
    stored = [m async for m in bus.read(stream, subject)]
    assert [m.data for m in stored] == datas
    assert not any(h.BATCH_ID in m.headers for m in stored)
    again = await bus.publish_batch(
        subject, outgoing([*datas, b"four"], key), expected_last_subject_seq=acks[-1].seq, atomic=False
    )
    assert [(a.seq, a.duplicate) for a in again[:3]] == [(a.seq, True) for a in acks]
    assert again[3].duplicate is False and again[3].seq == acks[-1].seq + 1
    with pytest.raises(WrongLastSequence):  # fenced on the first record like a batch
        await bus.publish_batch(subject, outgoing([b"late"]), expected_last_subject_seq=acks[-1].seq, atomic=False)
    assert [m.data async for m in bus.read(stream, subject)] == [*datas, b"four"]


async def test_a_batch_whose_writer_goes_before_the_commit_stores_nothing(nats_url: str, bus: Bus, stream: str) -> None:
    subject = f"{stream.lower()}.a"
    nc = await nats.connect(nats_url)
    batch_id = uuid.uuid4().hex
    for i in (1, 2):
        await nc.publish(subject, b"uncommitted", headers={h.BATCH_ID: batch_id, h.BATCH_SEQUENCE: str(i)})
    await nc.flush()
    await nc.close()
    after = await bus.publish(subject, b"next writer", expected_last_subject_seq=0)
    assert after.seq == 1 and await bus.stream_last_seq(stream) == 1
    assert [m.data async for m in bus.read(stream, subject)] == [b"next writer"]


async def test_a_stream_made_without_atomic_batches_gets_them(bus: Bus) -> None:
    spec = StreamSpec(
        name="T_ATOMIC", subjects=("t.atomic.*",), retention="limits", storage="file", duplicate_window_s=120.0
    )
    await bus.ensure_stream(spec)  # as a stream made before the session log used batches
    assert (await bus.stream_spec("T_ATOMIC")).allow_atomic is False
    await bus.ensure_stream(spec.model_copy(update={"allow_atomic": True}))
    assert (await bus.stream_spec("T_ATOMIC")).allow_atomic is True
    acks = await bus.publish_batch("t.atomic.a", outgoing([b"a", b"b"]), expected_last_subject_seq=0)
    assert [a.seq for a in acks] == [1, 2]


async def test_a_stream_that_allows_atomic_batches_the_spec_does_not_is_refused(bus: Bus) -> None:
    spec = StreamSpec(
        name="T_ATOMIC_DRIFT", subjects=("t.drift.*",), retention="limits", storage="file", duplicate_window_s=120.0
    )
    await bus.ensure_stream(spec.model_copy(update={"allow_atomic": True}))
    with pytest.raises(StreamMismatch, match="allow_atomic is True, expected False"):
        await bus.ensure_stream(spec)


async def test_records_stored_one_at_a_time_fenced_out_midway_say_how_many_were_stored(bus: Bus, stream: str) -> None:
    subject = f"{stream.lower()}.a"
    first = await bus.publish(subject, b"first")
    with pytest.raises(WrongLastSequence) as nothing_stored:
        await bus.publish_batch(subject, outgoing([b"x", b"y"]), expected_last_subject_seq=0, atomic=False)
    assert not isinstance(nothing_stored.value, PartlyStored)
    # another writer getting in after our first record, as the second record's fence sees it: a
    # fence of its own that the subject has moved past
    stale = OutgoingRecord(b"two", {h.EXPECTED_LAST_SUBJECT_SEQUENCE: str(first.seq)})
    with pytest.raises(PartlyStored) as partly:
        await bus.publish_batch(
            subject, [OutgoingRecord(b"one", {}), stale, OutgoingRecord(b"three", {})], atomic=False
        )
    assert partly.value.stored == 1
    assert [m.data async for m in bus.read(stream, subject)] == [b"first", b"one"]
