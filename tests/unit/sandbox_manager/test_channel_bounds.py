"""The manager's side of the agent's stream: what a sandbox sends is bounded.

The "container" here is the other end of a socket pair writing Docker's attach framing (an 8-byte
header: stream id, three zero bytes, a big-endian length); the same paths against a real engine are
in ``tests/integration/sandbox_manager/test_stream_bounds.py``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from pydantic import ValidationError

from corral.sandbox_manager.channel import UNSOLICITED_SLACK, AgentChannel, SandboxLost
from corral.sandbox_manager.channel_limits import ChannelLimits
from corral.sandbox_manager.settings import FRAME_FACTOR, FRAME_SLACK, MIN_PART_BYTES, SandboxSettings
from corral.sandbox_manager.stderr_excerpt import EXCERPT_RECORDS, STDERR_MAX_BYTES


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


@dataclass
class Wire:
    channel: AgentChannel
    container: socket.socket

    async def send(self, stream: int, payload: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.container, frame(stream, payload))

    async def request(self) -> tuple[str, asyncio.Future[dict[str, object]]]:
        call_id, future = await self.channel.begin("bash", {"command": "true"})
        line = await asyncio.get_running_loop().sock_recv(self.container, 65536)
        assert json.loads(line)["id"] == call_id
        return call_id, future


@pytest_asyncio.fixture
async def wire() -> AsyncIterator[Wire]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    channel = await AgentChannel.open(
        "corral-sbx-test", ours, ChannelLimits(max_frame_bytes=10_000, stderr_log_bytes=500)
    )
    try:
        yield Wire(channel, theirs)
    finally:
        await channel.close()
        theirs.close()


async def test_a_reply_in_several_frames_and_one_of_the_biggest_size_are_accepted(wire: Wire) -> None:
    call_id, future = await wire.request()
    line = json.dumps({"id": call_id, "content": [{"type": "text", "text": "x" * 9_000}]}).encode() + b"\n"
    for start in range(0, len(line), 1000):
        await wire.send(1, line[start : start + 1000])
    assert len((await future)["content"][0]["text"]) == 9_000  # type: ignore[index]
    assert not wire.channel.closed


async def test_a_line_longer_than_the_frame_limit_ends_the_stream_with_the_reason(wire: Wire) -> None:
    _, future = await wire.request()
    for _ in range(20):  # 20 000 bytes and no newline: never more than the limit is held
        await wire.send(1, b"x" * 1000)
        if wire.channel.closed:
            break
    with pytest.raises(SandboxLost) as lost:
        await future
    assert lost.value.reason == "it sent a reply line longer than the 10000-byte frame limit"
    assert wire.channel.closed and wire.channel.violation == lost.value.reason


async def test_one_docker_frame_bigger_than_the_limit_is_refused_before_it_is_all_read(wire: Wire) -> None:
    _, future = await wire.request()
    # a header announcing 1 GiB, then 20 000 bytes of it: read in chunks, refused at the limit
    header = bytes([1, 0, 0, 0]) + (1 << 30).to_bytes(4, "big")
    await asyncio.get_running_loop().sock_sendall(wire.container, header + b"y" * 20_000)
    with pytest.raises(SandboxLost, match="frame limit"):
        await future


async def test_a_line_that_is_not_a_reply_ends_the_stream(wire: Wire) -> None:
    _, future = await wire.request()
    await wire.send(1, b"Traceback (most recent call last): \x1b[31m\n")
    with pytest.raises(SandboxLost) as lost:
        await future
    assert lost.value.reason == (
        "it sent a line that is not an exec agent reply: 'Traceback (most recent call last): ?[31m'"
    )
    with pytest.raises(SandboxLost):
        await wire.channel.begin("bash", {"command": "true"})


async def test_more_replies_than_requests_end_the_stream(wire: Wire) -> None:
    _, future = await wire.request()
    # one request, so 1 + UNSOLICITED_SLACK replies are tolerated (replies to an earlier stream's calls)
    forged = b"".join(json.dumps({"id": f"forged-{n}"}).encode() + b"\n" for n in range(UNSOLICITED_SLACK + 1))
    await wire.send(1, forged)
    call_id, second = await wire.request()
    await wire.send(1, json.dumps({"id": call_id}).encode() + b"\n")
    await second
    assert not future.done() and not wire.channel.closed
    await wire.send(1, b"".join(json.dumps({"id": f"again-{n}"}).encode() + b"\n" for n in range(2)))
    with pytest.raises(SandboxLost) as lost:
        await future
    assert lost.value.reason == f"it sent {UNSOLICITED_SLACK + 3} replies to 2 requests"


async def test_stderr_is_drained_and_only_a_small_excerpt_is_logged(
    wire: Wire, caplog: pytest.LogCaptureFixture
) -> None:
    wire.channel.session_id = "sesn_flood"
    caplog.set_level(logging.WARNING, logger="corral.sandbox_manager.channel")
    for _ in range(200):
        await wire.send(2, b"e" * 5000 + b"\x00\n")
    call_id, future = await wire.request()  # stderr never blocks or ends the stream
    await wire.send(1, json.dumps({"id": call_id}).encode() + b"\n")
    await future
    await wire.channel.close()
    records = [r for r in caplog.records if r.name == "corral.sandbox_manager.channel"]
    fields = [r.fields for r in records]  # type: ignore[attr-defined]
    excerpts = [f["excerpt"] for f in fields if "excerpt" in f]
    assert 1 <= len(excerpts) <= EXCERPT_RECORDS
    assert sum(len(e) for e in excerpts) <= 500
    assert all(f["session_id"] == "sesn_flood" for f in fields)
    assert sum(f["dropped_bytes"] for f in fields) == 200 * 5002 - sum(len(e) for e in excerpts)
    assert fields[-1]["stderr_bytes"] == 200 * 5002


def test_the_frame_limit_must_fit_a_part_of_a_reply() -> None:
    smallest = FRAME_FACTOR * MIN_PART_BYTES + FRAME_SLACK
    with pytest.raises(ValidationError, match=f"CORRAL_SANDBOX_MAX_FRAME_BYTES to at least {smallest}"):
        SandboxSettings(max_frame_bytes=smallest - 1)
    assert SandboxSettings(max_frame_bytes=smallest).part_bytes == MIN_PART_BYTES
    default = SandboxSettings()
    # the default output limit holds a 5 MB output whole, and the frame bound did not grow for it
    assert default.output_limit >= 5_000_000 and default.max_frame_bytes == 1 << 20


def test_the_biggest_part_of_a_reply_fits_the_default_frame_limit() -> None:
    settings = SandboxSettings()
    # a part carries at most part_bytes of text; a control character is one byte of output and six of JSON
    line = json.dumps(
        {
            "id": "abcdef12-123456",
            "part": 99,
            "parts": 100,
            "bytes": settings.max_reply_bytes,
            "content": [{"type": "text", "text": "\x01" * settings.part_bytes}],
            "is_error": True,
        },
        ensure_ascii=False,
    )
    assert len(line.encode()) + 1 <= settings.max_frame_bytes


async def test_a_stderr_flood_beyond_its_rate_ends_the_stream(wire: Wire) -> None:
    _, future = await wire.request()
    chunk = b"e" * 65536
    for _ in range(STDERR_MAX_BYTES // len(chunk) + 1):
        await wire.send(2, chunk)
    with pytest.raises(SandboxLost) as lost:
        await future
    assert lost.value.reason == f"it wrote more than {STDERR_MAX_BYTES} bytes to stderr within 60 s"


async def test_a_cancel_nobody_waits_for_leaves_no_future_to_fail_unseen_when_the_stream_ends(wire: Wire) -> None:
    """Reconciliation cancels an adopted sandbox's old calls (``cancel("*")``) and may remove the
    sandbox before the agent answers: the stream's end must not fail a future nobody awaits (asyncio
    then logs "Future exception was never retrieved ... SandboxLost")."""
    unseen: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unseen.append(context))
    try:
        await wire.channel.cancel("*")
        assert json.loads(await loop.sock_recv(wire.container, 65536))["tool"] == "cancel"
        await wire.channel.close()  # the sandbox removed before the agent answered
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert [c["message"] for c in unseen] == []
