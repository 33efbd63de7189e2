"""The gateway's one follow of the session log against a real nats-server: many streams on one
follow each get exactly their own session's records, in order, once; none is lost in the moment a
stream opens; a stream resumes from a sequence; a closed stream leaves nothing behind; and the
follow holds one JetStream consumer however many streams are open."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from corral.bus import Bus
from corral.contracts import subjects
from corral.gateway.fanout import SessionFanout
from corral.settings import NatsSettings

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def following(nats_url: str) -> AsyncIterator[tuple[Bus, SessionFanout]]:
    async with Bus.connect(NatsSettings(url=nats_url), name="fanout-tests") as bus:
        await bus.ensure_stream(subjects.SESSIONS_SPEC)
        fanout = SessionFanout(bus)
        await fanout.start()
        task = asyncio.create_task(fanout.run())
        try:
            yield bus, fanout
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def append(bus: Bus, session_id: str, n: int) -> None:
    await bus.publish(subjects.session_log(session_id), json.dumps({"session": session_id, "n": n}).encode())


async def take(stream: AsyncGenerator[bytes, None], count: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    async with asyncio.timeout(20):
        while len(out) < count:
            out.append(json.loads(await anext(stream)))
    return out


async def test_many_streams_each_get_their_own_records_in_order_once(nats_url: str) -> None:
    async with following(nats_url) as (bus, fanout):
        sessions = [f"sesn_fan{i:03d}" for i in range(40)]
        await append(bus, sessions[0], -1)  # history before the streams open is not streamed
        streams = {sid: await fanout.open(sid) for sid in sessions}
        twice = await fanout.open(sessions[1])  # a second stream on one session gets it all too
        per_session = 15
        order = [sid for sid in sessions for _ in range(per_session)]
        random.Random(3).shuffle(order)
        counts = dict.fromkeys(sessions, 0)
        for sid in order:
            await append(bus, sid, counts[sid])
            counts[sid] += 1
        for sid, stream in streams.items():
            got = await take(stream, per_session)
            assert got == [{"session": sid, "n": n} for n in range(per_session)]
        assert await take(twice, per_session) == [{"session": sessions[1], "n": n} for n in range(per_session)]
        # nothing more is waiting on any stream: each record went to its own session's streams, once
        await append(bus, sessions[0], 99)
        assert await take(streams[sessions[0]], 1) == [{"session": sessions[0], "n": 99}]
        assert fanout.streams() == len(sessions) + 1
        for stream in [*streams.values(), twice]:
            await stream.aclose()
        assert fanout.streams() == 0


async def test_records_appended_while_streams_open_are_never_lost(nats_url: str) -> None:
    async with following(nats_url) as (bus, fanout):
        sid = "sesn_fanrace"
        writing = True

        async def writer() -> None:
            n = 0
            while writing:
                await append(bus, sid, n)
                n += 1

        task = asyncio.create_task(writer())
        try:
            for _ in range(20):
                stream = await fanout.open(sid)
                first = (await take(stream, 1))[0]
                # from wherever a stream starts, it sees consecutive records: no gap, no repeat
                assert await take(stream, 5) == [{"session": sid, "n": int(str(first["n"])) + k} for k in range(1, 6)]
                await stream.aclose()
        finally:
            writing = False
            await task


async def test_a_stream_resumes_from_a_sequence(nats_url: str) -> None:
    async with following(nats_url) as (bus, fanout):
        sid = "sesn_fanresume"
        for n in range(5):
            await append(bus, sid, n)
        after = await bus.last_seq(subjects.SESSIONS_STREAM, subjects.session_log(sid))
        for n in range(5, 8):
            await append(bus, sid, n)
        stream = await fanout.open(sid, after_seq=after)
        await append(bus, sid, 8)
        assert [r["n"] for r in await take(stream, 4)] == [5, 6, 7, 8]
        await stream.aclose()


async def test_one_consumer_serves_every_stream(nats_url: str) -> None:
    async with following(nats_url) as (bus, fanout):
        await append(bus, "sesn_fanwarm", 0)
        before = await consumers(bus)
        streams = [await fanout.open(f"sesn_fancount{i}") for i in range(50)]
        await append(bus, "sesn_fancount7", 0)
        assert await take(streams[7], 1) == [{"session": "sesn_fancount7", "n": 0}]
        assert await consumers(bus) == before
        for stream in streams:
            await stream.aclose()


async def consumers(bus: Bus) -> int:
    info = await bus._js.stream_info(subjects.SESSIONS_STREAM)  # noqa: SLF001 - a count only the server knows
    return int(info.state.consumer_count)
