"""Replies in parts: a tool output longer than one reply line travels as several bounded lines, put
together by the manager up to the output limit; anything else is a protocol violation.

The agent runs as a process (``python3 -c <source> <config>``) and the manager's channel reads a
socket pair carrying Docker's attach framing; the same through a real engine is in
``tests/integration/sandbox_manager/test_reply_parts.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from corral.sandbox_manager.agent import source
from corral.sandbox_manager.agent.program.text import split
from corral.sandbox_manager.channel import AgentChannel, SandboxLost
from corral.sandbox_manager.channel_limits import FRAME_FACTOR, FRAME_SLACK, ChannelLimits, ReplyAssemblies
from corral.sandbox_manager.replies import parse_reply
from tests.waiting import eventually

PART = 1000
LIMITS = ChannelLimits(max_frame_bytes=FRAME_FACTOR * PART + FRAME_SLACK, max_reply_bytes=10_000)


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


@dataclass
class Wire:
    channel: AgentChannel
    container: socket.socket

    async def send(self, payload: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.container, frame(1, payload))

    async def request(self) -> tuple[str, asyncio.Future[dict[str, Any]]]:
        call_id, future = await self.channel.begin("bash", {"command": "true"})
        line = await asyncio.get_running_loop().sock_recv(self.container, 65536)
        assert json.loads(line)["id"] == call_id
        return call_id, future


async def open_wire(limits: ChannelLimits = LIMITS) -> Wire:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    return Wire(await AgentChannel.open("corral-sbx-parts", ours, limits), theirs)


@pytest_asyncio.fixture
async def wire() -> AsyncIterator[Wire]:
    opened = await open_wire()
    try:
        yield opened
    finally:
        await opened.channel.close()
        opened.container.close()


def parts(call_id: str, text: str, *, part_bytes: int = PART, is_error: bool = False) -> list[dict[str, Any]]:
    """The lines the agent sends for ``text`` (see ``agent.program.server``)."""
    pieces = split(text, part_bytes)
    total = len(text.encode())
    return [
        {
            "id": call_id,
            "part": i,
            "parts": len(pieces),
            "bytes": total,
            "content": [{"type": "text", "text": piece}],
            "is_error": is_error,
        }
        for i, piece in enumerate(pieces)
    ]


def lines(bodies: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(b, ensure_ascii=False).encode() + b"\n" for b in bodies)


def test_split_cuts_between_characters_and_fills_every_piece_but_the_last() -> None:
    text = ("é€𝄞a" * 800) + "end"
    pieces = split(text, PART)
    assert "".join(pieces) == text and len(pieces) > 1
    sizes = [len(p.encode()) for p in pieces]
    assert all(PART - 3 <= s <= PART for s in sizes[:-1]) and 0 < sizes[-1] <= PART
    assert split("short", PART) == ["short"]


async def test_a_reply_in_parts_is_put_together_whole(wire: Wire) -> None:
    call_id, future = await wire.request()
    text = "".join(f"line {n} é€𝄞\n" for n in range(400))  # multi-byte characters across the cuts
    await wire.send(lines(parts(call_id, text, is_error=True)))
    reply = parse_reply(await future)
    assert (reply.text, reply.is_error) == (text, True)
    second, future2 = await wire.request()  # the stream goes on: a one-line reply after it
    await wire.send(json.dumps({"id": second, "content": [{"type": "text", "text": "ok"}]}).encode() + b"\n")
    assert parse_reply(await future2).text == "ok" and not wire.channel.closed


async def test_parts_of_a_reply_nobody_waits_for_are_checked_and_dropped(wire: Wire) -> None:
    await wire.send(lines(parts("earlier-stream-7", "z" * 5000)))
    call_id, future = await wire.request()
    await wire.send(json.dumps({"id": call_id, "content": [{"type": "text", "text": "ok"}]}).encode() + b"\n")
    assert parse_reply(await future).text == "ok" and not wire.channel.closed


def _lying_count(call_id: str) -> bytes:
    bodies = parts(call_id, "a" * 3500)  # 4 parts
    return lines([{**b, "parts": 3} for b in bodies[:3]])


def _oversize(call_id: str) -> bytes:
    bodies = parts(call_id, "a" * 3500)
    bodies[1]["content"][0]["text"] = "b" * (PART + 1)
    return lines(bodies)


def _undersize(call_id: str) -> bytes:
    bodies = parts(call_id, "a" * 3500)
    bodies[1]["content"][0]["text"] = "b" * 10
    return lines(bodies)


def _out_of_order(call_id: str) -> bytes:
    bodies = parts(call_id, "a" * 3500)
    return lines([bodies[0], bodies[2], bodies[1], bodies[3]])


def _garbage_between(call_id: str) -> bytes:
    bodies = parts(call_id, "a" * 3500)
    return lines(bodies[:2]) + b"garbage written into the agent's stdout\n" + lines(bodies[2:])


def _other_reply_between(call_id: str) -> bytes:
    bodies = parts(call_id, "a" * 3500)
    other = {"id": "someone-else", "content": [{"type": "text", "text": "x"}]}
    return lines([bodies[0], other, *bodies[1:]])


def _over_the_reply_limit(call_id: str) -> bytes:
    return lines(parts(call_id, "a" * 10_001))


def _first_part_missing(call_id: str) -> bytes:
    return lines(parts(call_id, "a" * 3500)[1:])


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (_lying_count, "it announced a reply of 3500 bytes in 3 parts of 1000"),
        (_oversize, "it sent a part of 1001 bytes (parts but the last carry 997 to 1000)"),
        (_undersize, "it sent a part of 10 bytes (parts but the last carry 997 to 1000)"),
        (_out_of_order, "it sent a line that is not part 1 of 4 of the reply it was sending"),
        (_garbage_between, 'it sent a line inside a reply in parts: "garbage written into the agent\'s stdout"'),
        (_other_reply_between, "it sent a line that is not part 1 of 4 of the reply it was sending"),
        (_over_the_reply_limit, "it announced a reply of 10001 bytes in 11 parts (at most 10000 bytes in 11 parts)"),
        (_first_part_missing, "it sent part 1 of a reply before its part 0"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
async def test_parts_that_break_the_rules_end_the_stream(wire: Wire, forge: Any, reason: str) -> None:
    call_id, future = await wire.request()
    await wire.send(forge(call_id))
    with pytest.raises(SandboxLost) as lost:
        await future
    assert lost.value.reason == reason
    assert wire.channel.closed


async def test_a_part_beyond_the_count_announced_ends_the_stream(wire: Wire) -> None:
    call_id, future = await wire.request()
    bodies = [{**b, "parts": 3, "bytes": 3000} for b in parts(call_id, "a" * 3500)]
    await wire.send(lines(bodies))
    assert parse_reply(await future).text == "a" * 3000  # what was announced, whole
    await until(lambda: wire.channel.closed)
    assert wire.channel.violation == "it sent part 3 of a reply before its part 0"


async def test_the_reply_after_a_wrong_final_size_is_not_taken(wire: Wire) -> None:
    call_id, future = await wire.request()
    bodies = parts(call_id, "a" * 3500)
    bodies[-1]["content"][0]["text"] = "a" * 499  # the last part carries one byte less than announced
    await wire.send(lines(bodies))
    with pytest.raises(SandboxLost, match="sent 3499 bytes in 4 parts of a reply announced as 3500 bytes"):
        await future


async def until(condition: Any) -> None:
    async def holds() -> bool:
        return bool(condition())

    await eventually(holds, timeout=10, every=0.01)


async def test_only_so_many_replies_are_put_together_at_once_and_a_lost_stream_frees_its_place() -> None:
    assemblies = ReplyAssemblies(1)
    limits = ChannelLimits(max_frame_bytes=LIMITS.max_frame_bytes, max_reply_bytes=10_000, assemblies=assemblies)
    first, second, third = await open_wire(limits), await open_wire(limits), await open_wire(limits)
    try:
        a_id, a_future = await first.request()
        b_id, b_future = await second.request()
        a_parts = parts(a_id, "a" * 3500)
        await first.send(lines(a_parts[:2]))  # first holds the only place
        await until(lambda: assemblies.taken == 1)
        await second.send(lines(parts(b_id, "b" * 3500)))  # second waits for it, reading nothing more
        await until(lambda: assemblies.waiting == 1)
        assert not b_future.done()
        await first.send(lines(a_parts[2:]))
        assert parse_reply(await a_future).text == "a" * 3500
        async with asyncio.timeout(10):
            assert parse_reply(await b_future).text == "b" * 3500
        await until(lambda: assemblies.taken == 0)

        c_id, c_future = await third.request()
        await third.send(lines(parts(c_id, "c" * 2500)[:1]))
        await until(lambda: assemblies.taken == 1)
        await third.channel.close()  # mid-reply: its place is given back
        with pytest.raises(SandboxLost):
            await c_future
        assert assemblies.taken == 0
        d_id, d_future = await first.request()
        await first.send(lines(parts(d_id, "d" * 2500)))
        async with asyncio.timeout(10):
            assert parse_reply(await d_future).text == "d" * 2500
    finally:
        for w in (first, second, third):
            await w.channel.close()
            w.container.close()


async def test_the_agent_sends_a_long_output_in_parts_the_manager_puts_together(tmp_path: Path) -> None:
    """The real agent: 300 000 bytes of bash output with 4096-byte parts, every line within the frame."""
    config = json.dumps({"root": str(tmp_path), "output_limit": 1_000_000, "part_bytes": 4096})
    proc = subprocess.Popen(  # noqa: ASYNC220  # the agent, fed and read by the tasks below
        [sys.executable, "-c", source(), config], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    limits = ChannelLimits(max_frame_bytes=FRAME_FACTOR * 4096 + FRAME_SLACK, max_reply_bytes=1_100_000)
    ours, theirs = socket.socketpair()
    channel = await AgentChannel.open("corral-sbx-agent", ours, limits)
    assert proc.stdin is not None and proc.stdout is not None
    loop = asyncio.get_running_loop()

    async def pump_requests() -> None:  # manager -> agent's stdin
        while data := await loop.sock_recv(theirs, 65536):
            proc.stdin.write(data)  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]

    widest: list[int] = [0]

    async def pump_replies() -> None:  # agent's stdout -> the attach framing
        while line := await loop.run_in_executor(None, proc.stdout.readline):  # type: ignore[union-attr]
            widest[0] = max(widest[0], len(line))
            await loop.sock_sendall(theirs, frame(1, line))

    theirs.setblocking(False)
    tasks = [asyncio.create_task(pump_requests()), asyncio.create_task(pump_replies())]
    try:
        command = "head -c 300000 /dev/zero | tr '\\0' x; printf 'é€𝄞-the-end'"
        reply = await channel.call("bash", {"command": command}, timeout_ms=20_000, wait_s=30)
        assert reply.text == "x" * 300_000 + "é€𝄞-the-end" and not reply.is_error
        assert 4096 < widest[0] <= limits.max_frame_bytes
        small = await channel.call("bash", {"command": "echo hi"}, timeout_ms=20_000, wait_s=30)
        assert small.text == "hi\n"
    finally:
        await channel.close()
        proc.stdin.close()
        proc.wait(timeout=10)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        theirs.close()
        proc.stdout.close()
