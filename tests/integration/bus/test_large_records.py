"""Records larger than the server's max_payload, on a real nats-server: stored in parts, read whole.

A writer that dies mid-record is played by publishing some of a record's parts by hand, in the
documented format (``corral.bus.records``), as ``Bus.publish`` would have before the crash.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from corral.bus import Bus, IncompleteRecord, Operations, StoredMessage, WrongLastSequence, records
from corral.contracts import headers as h
from corral.contracts.operation import operation
from corral.contracts.rpc import RpcReply
from corral.contracts.subjects import SESSIONS_SPEC
from corral.settings import NatsSettings

pytestmark = pytest.mark.integration

CHUNK = 1024


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A bus that stores records over 1 KiB in parts, so a test needs only a few KiB per record."""
    async with Bus.connect(NatsSettings(url=nats_url, record_chunk_bytes=CHUNK), name="large-records") as b:
        yield b


@pytest.fixture
async def stream(bus: Bus, request: pytest.FixtureRequest) -> str:
    name = "T_" + request.node.name.upper().replace("[", "_").replace("]", "")[:40]
    await bus.ensure_stream(SESSIONS_SPEC.model_copy(update={"name": name, "subjects": (f"{name.lower()}.*",)}))
    return name


def blob(size: int) -> bytes:
    return os.urandom(size // 2).hex().encode()[:size]


async def crash_after(bus: Bus, subject: str, data: bytes, *, msg_id: str, parts: int, fence: int) -> list[int]:
    """Publish only the first ``parts`` parts of ``data`` as ``Bus.publish`` would; their sequences."""
    chunks = records.split(data, bus.chunk_size)
    sha = records.digest(data)
    seqs: list[int] = []
    for i, chunk in enumerate(chunks[:parts], 1):
        hdrs = records.part_headers({}, msg_id, i, len(chunks), sha)
        if seqs:
            hdrs[h.RECORD_FIRST_SEQ] = str(seqs[0])
        hdrs[h.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(seqs[-1] if seqs else fence)
        ack = await bus.publish_raw(subject, chunk, headers=hdrs)
        seqs.append(ack.seq)
    return seqs


async def read_all(bus: Bus, stream: str, subject: str, after_seq: int = 0) -> list[StoredMessage]:
    return [m async for m in bus.read(stream, subject, after_seq=after_seq)]


async def test_a_record_larger_than_max_payload_is_stored_in_parts_and_read_whole(nats_url: str) -> None:
    async with Bus.connect(NatsSettings(url=nats_url), name="default-chunks") as bus:
        await bus.ensure_stream(SESSIONS_SPEC.model_copy(update={"name": "T_HUGE", "subjects": ("t.huge.*",)}))
        big = blob(3 * bus.max_payload + 17)
        before = await bus.publish("t.huge.a", b"small", msg_id="s1", expected_last_subject_seq=0)
        ack = await bus.publish("t.huge.a", big, msg_id="big-1", expected_last_subject_seq=before.seq)
        after = await bus.publish("t.huge.a", b"after", expected_last_subject_seq=ack.seq)

        assert ack.first_seq is not None and ack.seq - ack.first_seq == 3  # four parts, consecutive
        assert not ack.duplicate
        got = await read_all(bus, "T_HUGE", "t.huge.a")
        assert [(m.seq, m.data) for m in got] == [(before.seq, b"small"), (ack.seq, big), (after.seq, b"after")]
        assert got[1].first_seq == ack.first_seq
        assert (await bus.get("T_HUGE", ack.seq)).data == big
        assert (await bus.get("T_HUGE", ack.first_seq + 1)).data == big  # any part gives the whole record

        # A retry expecting the subject's tail (a stale fence is refused first, as for any message).
        again = await bus.publish("t.huge.a", big, msg_id="big-1", expected_last_subject_seq=after.seq)
        assert (again.seq, again.first_seq, again.duplicate) == (ack.seq, ack.first_seq, True)


async def test_follow_yields_a_record_whole_live_and_from_the_middle_of_its_parts(bus: Bus, stream: str) -> None:
    subject = f"{stream.lower()}.a"
    big = blob(5 * CHUNK + 3)
    live = bus.follow(stream, subject, after_seq=0)
    first = asyncio.ensure_future(anext(live))
    ack = await bus.publish(subject, big, msg_id="live")
    msg = await asyncio.wait_for(first, 10)
    await live.aclose()
    # Whether the follow started before or after the publish, it never yields a fragment.
    assert msg.data == big and msg.seq == ack.seq

    assert ack.first_seq is not None
    for after in (ack.first_seq - 1, ack.first_seq, ack.first_seq + 2, ack.seq - 1):
        follower = bus.follow(stream, subject, after_seq=after)
        got = await asyncio.wait_for(anext(follower), 10)
        await follower.aclose()
        assert (got.seq, got.first_seq, got.data) == (ack.seq, ack.first_seq, big), after
    assert [m.data for m in await read_all(bus, stream, subject, after_seq=ack.first_seq + 1)] == [big]
    assert await read_all(bus, stream, subject, after_seq=ack.seq) == []


async def test_a_retried_publish_completes_a_record_its_writer_left_half_stored(bus: Bus, stream: str) -> None:
    subject = f"{stream.lower()}.a"
    big = blob(4 * CHUNK)
    seqs = await crash_after(bus, subject, big, msg_id="rec-1", parts=2, fence=0)

    assert await read_all(bus, stream, subject) == []  # nothing whole yet
    with pytest.raises(IncompleteRecord):
        await bus.get(stream, seqs[-1])

    with pytest.raises(WrongLastSequence):  # the retry's writer must expect the raw tail
        await bus.publish(subject, big, msg_id="rec-1", expected_last_subject_seq=0)
    ack = await bus.publish(subject, big, msg_id="rec-1", expected_last_subject_seq=seqs[-1])
    assert (ack.first_seq, ack.seq, ack.duplicate) == (seqs[0], seqs[0] + 3, False)
    got = await read_all(bus, stream, subject)
    assert [(m.seq, m.first_seq, m.data) for m in got] == [(ack.seq, seqs[0], big)]


async def test_an_abandoned_half_record_is_skipped_and_does_not_fence_the_next_writer_out(
    bus: Bus, stream: str
) -> None:
    subject = f"{stream.lower()}.a"
    one = await bus.publish(subject, b"one", expected_last_subject_seq=0)
    big = blob(4 * CHUNK)
    seqs = await crash_after(bus, subject, big, msg_id="rec-2", parts=3, fence=one.seq)

    # The raw tail counts the parts: the last whole record's sequence is not what a writer expects.
    assert await bus.last_seq(stream, subject) == seqs[-1]
    assert await bus.last_record_seq(stream, subject) is None
    reading = bus.read(stream, subject)
    assert [m.data async for m in reading] == [b"one"]
    assert reading.tail_seq == seqs[-1]
    with pytest.raises(WrongLastSequence):
        await bus.publish(subject, b"two", expected_last_subject_seq=one.seq)
    two = await bus.publish(subject, b"two", expected_last_subject_seq=reading.tail_seq)
    assert await bus.last_record_seq(stream, subject) == two.seq

    # The half record stays skipped, and a late retry of it stores it afresh, whole, after "two".
    retried = await bus.publish(subject, big, msg_id="rec-2", expected_last_subject_seq=two.seq)
    assert retried.first_seq == two.seq + 1 and not retried.duplicate
    got = await read_all(bus, stream, subject)
    assert [(m.seq, m.data) for m in got] == [(one.seq, b"one"), (two.seq, b"two"), (retried.seq, big)]
    follower = bus.follow(stream, subject, after_seq=0)
    followed = [await asyncio.wait_for(anext(follower), 10) for _ in range(3)]
    await follower.aclose()
    assert [m.data for m in followed] == [b"one", b"two", big]


async def test_a_follower_is_told_it_passed_a_half_record_so_it_can_tell_it_reached_the_raw_tail(
    bus: Bus, stream: str
) -> None:
    """What the harness waits on: "my read has got to the subject's last message". With a half record
    at the tail, the whole records end before it; the parts are reported as passed positions."""
    subject = f"{stream.lower()}.a"
    one = await bus.publish(subject, b"one", expected_last_subject_seq=0)
    seqs = await crash_after(bus, subject, blob(4 * CHUNK), msg_id="rec-4", parts=2, fence=one.seq)
    tail = await bus.last_seq(stream, subject)

    follower = bus.follow_positions(stream, subject, after_seq=0)
    got = [await asyncio.wait_for(anext(follower), 10) for _ in range(3)]
    await follower.aclose()

    assert tail == seqs[-1]
    assert isinstance(got[0], StoredMessage) and got[0].data == b"one"
    assert got[1:] == seqs, "each part that completes no record is its raw sequence"


async def test_a_retry_that_encoded_the_record_otherwise_gets_the_stored_record_as_its_duplicate(
    bus: Bus, stream: str
) -> None:
    subject = f"{stream.lower()}.a"
    first = await bus.publish(subject, blob(3 * CHUNK), msg_id="rec-3", expected_last_subject_seq=0)
    again = await bus.publish(subject, blob(5 * CHUNK), msg_id="rec-3", expected_last_subject_seq=first.seq)
    assert (again.seq, again.first_seq, again.duplicate) == (first.seq, first.first_seq, True)
    assert len(await read_all(bus, stream, subject)) == 1


class Ask(BaseModel):
    size: int


async def test_a_reply_over_max_payload_reaches_the_caller_as_an_error_reply_within_a_second(bus: Bus) -> None:
    async def big(req: Ask) -> dict[str, str]:
        return {"text": "x" * req.size}

    async def broken(_req: Ask) -> None:
        raise RuntimeError("boom")

    big_op = operation("big", "t.rpc.big", Ask, dict[str, str], queue="t", service="test service", bounded=True)
    broken_op = operation("broken", "t.rpc.broken", Ask, type(None), queue="t", service="test service")
    ops = Operations(service="test service").handle(big_op, big).handle(broken_op, broken)
    async with ops.serve(bus):
        started = time.monotonic()
        raw = await bus.request("t.rpc.big", Ask(size=2 * bus.max_payload).model_dump_json().encode(), timeout=5)
        assert time.monotonic() - started < 1.0
        reply = RpcReply.model_validate_json(raw)
        assert reply.error is not None and reply.error.type == "request_too_large"
        assert str(bus.max_payload) in reply.error.message

        raw = await bus.request("t.rpc.broken", Ask(size=1).model_dump_json().encode(), timeout=5)
        broken_reply = RpcReply.model_validate_json(raw)
        assert broken_reply.error is not None and broken_reply.error.type == "api_error"

    async def raises(_data: bytes, _headers: dict[str, str]) -> bytes:
        raise RuntimeError("boom")

    async def oversize(_data: bytes, _headers: dict[str, str]) -> bytes:
        return b"x" * (bus.max_payload + 1)

    async with bus.serve("t.raw.raises", raises, queue="t"), bus.serve("t.raw.big", oversize, queue="t"):
        for subject, kind in (("t.raw.raises", "api_error"), ("t.raw.big", "request_too_large")):
            started = time.monotonic()
            reply = RpcReply.model_validate_json(await bus.request(subject, b"", timeout=5))
            assert time.monotonic() - started < 1.0, subject
            assert reply.error is not None and reply.error.type == kind, subject


async def test_a_request_and_a_reply_larger_than_max_payload_travel_whole(bus: Bus) -> None:
    async def echo(data: bytes, _headers: dict[str, str]) -> bytes:
        return data[::-1] + data

    async with bus.serve("t.raw.echo", echo, queue="t", large_replies=True):
        body = blob(3 * bus.max_payload)
        assert await bus.request("t.raw.echo", body, timeout=20) == body[::-1] + body
        assert await bus.request("t.raw.echo", b"ab", timeout=5) == b"baab"
