"""The manager's side of the exec agent's wire: JSON lines over a Docker attach socket.

Without a TTY, Docker multiplexes the container's stdout and stderr on the attach stream in frames
(an 8-byte header: stream id, three zero bytes, a big-endian length). What we write is the
container's stdin, unframed. stdout carries the agent's replies; stderr is drained and only a small
excerpt is logged. The stream ends when the container stops, which fails every call in flight with
``SandboxLost``.

Everything read from a sandbox is bounded (``ChannelLimits``): a reply line longer than
``max_frame_bytes``, a line that is not a reply (a JSON object with an ``id``), or more replies than
requests sent (plus a little slack for replies to requests of an earlier stream) is a protocol
violation: the stream is closed at once, every call in flight fails with ``SandboxLost`` carrying
the reason, and the owner removes the container (the session's next call gets a fresh one). Reads
are made in chunks of at most ``READ_CHUNK`` bytes and never hold more than one partial line, so the
memory a sandbox can make the manager hold is about ``max_frame_bytes`` plus the reader's buffer,
plus one reply in parts being put together.

A reply longer than one line may hold goes in parts (see ``agent.program``): consecutive lines of the
same id, each declaring ``part``, ``parts`` and ``bytes`` (the whole text's size). The manager puts
them together only for a call it waits for, up to ``max_reply_bytes`` (the output limit plus a
little), and only ``ReplyAssemblies.most`` at once across all sandboxes (a sandbox whose reply finds
none free is not read from until one is: its writes block, nothing more is held). Anything else is a
protocol violation: a part count or size beyond the bounds, a count that does not match the size, a
part out of order, a line of anything else (another reply, garbage) between two parts, a part too
large or (but the last) too small, more or fewer bytes than announced.
stderr is drained as it comes (the sandbox never blocks on it) and never copied in bulk: at most
``EXCERPT_RECORDS`` log records of at most ``stderr_log_bytes`` of text in all per
``EXCERPT_WINDOW_S`` per sandbox, with the session id and a count of the bytes dropped; more than
``STDERR_MAX_BYTES`` in a window is a protocol violation too (what it costs the manager to drain).

Why attach rather than ``docker exec`` per call or a unix socket: exec costs ~60-80 ms a call here,
a unix socket needs a host path mounted into the sandbox, and attach is one long-lived connection
through the engine with ~0.1 ms round trips, that survives a manager restart (reattach).

The bounds are ``channel_limits``'s, replies and their parts ``replies``'s, stderr ``stderr_excerpt``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import socket
from collections.abc import Callable
from typing import Any, Final

# Re-exported: the settings import the frame bounds from this module.
from corral.sandbox_manager.channel_limits import FRAME_FACTOR as FRAME_FACTOR
from corral.sandbox_manager.channel_limits import FRAME_SLACK as FRAME_SLACK
from corral.sandbox_manager.channel_limits import REPLY_SLACK as REPLY_SLACK
from corral.sandbox_manager.channel_limits import ChannelLimits
from corral.sandbox_manager.replies import AgentReply, PartsAssembler, ProtocolViolation, parse_reply
from corral.sandbox_manager.stderr_excerpt import StderrExcerpt, printable

logger = logging.getLogger(__name__)

_STDOUT = 1
_STDERR = 2

#: Bytes read from the attach socket at a time (and the reader's buffer high-water mark).
READ_CHUNK: Final = 65536
#: Replies beyond the requests sent on this stream that are tolerated (replies to requests an earlier
#: stream sent to the same container, before a manager restart: at most its calls in flight).
UNSOLICITED_SLACK: Final = 64
#: Bytes of an offending line quoted in a protocol violation's reason.
QUOTED_BYTES: Final = 60


class SandboxLost(Exception):
    """The container stopped (or its stream broke, or it broke the protocol) while a call was in flight."""

    def __init__(self, name: str, reason: str | None = None) -> None:
        super().__init__(name if reason is None else f"{name}: {reason}")
        self.name = name
        #: Why the manager ended the sandbox (a protocol violation); ``None`` when it simply stopped.
        self.reason = reason


class AgentChannel:
    def __init__(
        self,
        name: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: ChannelLimits | None = None,
    ) -> None:
        self.name = name
        #: The session the sandbox serves (for log records), set when it is bound to one.
        self.session_id: str | None = None
        self.limits = limits or ChannelLimits()
        self._reader = reader
        self._writer = writer
        # Ids are unique across streams: a reply to a request sent on an earlier stream to the same
        # container (before a manager restart) reaches this one too, and must match nothing here.
        self._prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._sent = 0
        self._replies = 0
        self._line = bytearray()
        self._stderr = StderrExcerpt(self, self.limits.stderr_log_bytes)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._parts = PartsAssembler(self.limits, self._pending)
        self._closed = asyncio.Event()
        #: Why the manager ended the stream (a protocol violation), ``None`` otherwise.
        self.violation: str | None = None
        self._on_lost: list[Callable[[], None]] = []
        self._pump = asyncio.get_running_loop().create_task(self._read(), name=f"agent-stream:{name}")

    @classmethod
    async def open(cls, name: str, sock: socket.socket, limits: ChannelLimits | None = None) -> AgentChannel:
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=READ_CHUNK)
        return cls(name, reader, writer, limits)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when the stream ends (at once if it already has)."""
        if self._closed.is_set():
            callback()
        else:
            self._on_lost.append(callback)

    async def _read(self) -> None:
        try:
            while True:
                header = await self._reader.readexactly(8)
                stream = header[0]
                remaining = int.from_bytes(header[4:8], "big")
                while remaining:
                    chunk = await self._reader.read(min(remaining, READ_CHUNK))
                    if not chunk:
                        return
                    remaining -= len(chunk)
                    if stream == _STDOUT:
                        for line in self._take_stdout(chunk):
                            await self._dispatch(line)
                    elif stream == _STDERR:
                        self._stderr.take(chunk)
        except ProtocolViolation as exc:
            self.violation = str(exc)
            logger.warning(
                "a sandbox broke the exec agent's protocol; it is removed",
                extra={"fields": {"sandbox": self.name, "session_id": self.session_id, "violation": self.violation}},
            )
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._stderr.close()
            self._lose()

    def _take_stdout(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes (all within one chunk's bytes, plus the one line held)."""
        limit = self.limits.max_frame_bytes
        lines = []
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if len(self._line) + end - start > limit:
                raise ProtocolViolation(f"it sent a reply line longer than the {limit}-byte frame limit")
            self._line += chunk[start:end]
            lines.append(bytes(self._line))
            self._line.clear()
            start = end + 1
        if len(self._line) + len(chunk) - start > limit:
            raise ProtocolViolation(f"it sent a reply line longer than the {limit}-byte frame limit")
        self._line += chunk[start:]
        return lines

    async def _dispatch(self, line: bytes) -> None:
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or "id" not in reply:
            quoted = printable(line[:QUOTED_BYTES]) + ("..." if len(line) > QUOTED_BYTES else "")
            if self._parts.active:
                raise ProtocolViolation(f"it sent a line inside a reply in parts: {quoted!r}")
            raise ProtocolViolation(f"it sent a line that is not an exec agent reply: {quoted!r}")
        if self._parts.active:
            self._parts.add(reply)
            return
        self._replies += 1
        if self._replies > self._sent + UNSOLICITED_SLACK:
            raise ProtocolViolation(f"it sent {self._replies} replies to {self._sent} requests")
        if "parts" in reply or "part" in reply:
            await self._parts.begin(reply)
            return
        future = self._pending.pop(str(reply["id"]), None)
        if future is not None and not future.done():
            future.set_result(reply)

    def _lose(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._parts.drop()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SandboxLost(self.name, self.violation))
        self._pending.clear()
        with contextlib.suppress(Exception):
            self._writer.close()
        for callback in self._on_lost:
            try:
                callback()
            except Exception:
                logger.exception("on_lost callback failed", extra={"fields": {"sandbox": self.name}})

    def _send(self, tool: str, args: dict[str, Any], timeout_ms: int | None) -> tuple[str, asyncio.Future[Any]]:
        if self._closed.is_set():
            raise SandboxLost(self.name, self.violation)
        self._sent += 1
        call_id = f"{self._prefix}-{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        request = {"id": call_id, "tool": tool, "input": args, "timeout_ms": timeout_ms}
        self._writer.write(json.dumps(request, ensure_ascii=False).encode("utf-8", "replace") + b"\n")
        return call_id, future

    async def begin(
        self, tool: str, args: dict[str, Any], timeout_ms: int | None = None
    ) -> tuple[str, asyncio.Future[dict[str, Any]]]:
        """Send a request; its id (to cancel it) and the future of its raw reply (``parse_reply`` it).

        Raises:
            SandboxLost: the stream has ended.
        """
        call_id, future = self._send(tool, args, timeout_ms)
        try:
            await self._drain()
        except BaseException:
            self._pending.pop(call_id, None)
            raise
        return call_id, future

    async def call(self, tool: str, args: dict[str, Any], *, timeout_ms: int | None, wait_s: float) -> AgentReply:
        """Run a tool and wait for its reply.

        Raises:
            SandboxLost: the container stopped before answering.
            TimeoutError: no answer within ``wait_s``.
        """
        async with asyncio.timeout(wait_s):
            call_id, future = await self.begin(tool, args, timeout_ms)
            try:
                reply = await future
            finally:
                self._pending.pop(call_id, None)
        return parse_reply(reply)

    def forget(self, call_id: str) -> None:
        """Stop waiting for a reply (its caller gave up)."""
        self._pending.pop(call_id, None)

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError):
            self._lose()
            raise SandboxLost(self.name, self.violation) from None

    async def cancel(self, call_id: str) -> None:
        """Stop a running request (``"*"``: every request, including ones sent on an earlier stream).

        Nobody waits for the agent's answer: its future is forgotten at once, so a stream that ends
        before the answer (the sandbox removed right after reconciliation cancelled its old calls)
        fails no future that nobody will ever await."""
        with contextlib.suppress(SandboxLost):
            sent, _ = await self.begin("cancel", {"target": call_id})
            self.forget(sent)

    async def ping(self, wait_s: float) -> dict[str, Any]:
        """The agent's raw answer (``protocol``, ``pid``, ``sealed``).

        Raises:
            SandboxLost, TimeoutError: the agent did not answer within ``wait_s``.
        """
        async with asyncio.timeout(wait_s):
            call_id, future = await self.begin("ping", {}, None)
            try:
                return await future
            finally:
                self._pending.pop(call_id, None)

    async def detach(self) -> None:
        """Close the stream without treating it as a lost sandbox (the container keeps running)."""
        self._on_lost.clear()
        await self.close()

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._pump
        self._lose()
        with contextlib.suppress(Exception):  # the socket is really closed before this returns
            await self._writer.wait_closed()
