"""The manager's side of the exec agent's wire: JSON lines over a Docker attach socket.

Without a TTY, Docker multiplexes the container's stdout and stderr on the attach stream in frames
(an 8-byte header: stream id, three zero bytes, a big-endian length). What we write is the
container's stdin, unframed. stdout carries the agent's replies; stderr is logged. The stream ends
when the container stops, which fails every call in flight with ``SandboxLost``.

Why attach rather than ``docker exec`` per call or a unix socket: exec costs ~60-80 ms a call here,
a unix socket needs a host path mounted into the sandbox, and attach is one long-lived connection
through the engine with ~0.1 ms round trips, that survives a manager restart (reattach).
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
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

_STDOUT = 1
_STDERR = 2


class SandboxLost(Exception):
    """The container stopped (or its stream broke) while a call was in flight."""


@dataclass(frozen=True)
class AgentReply:
    text: str
    is_error: bool


class AgentChannel:
    def __init__(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.name = name
        self._reader = reader
        self._writer = writer
        # Ids are unique across streams: a reply to a request sent on an earlier stream to the same
        # container (before a manager restart) reaches this one too, and must match nothing here.
        self._prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._closed = asyncio.Event()
        self._on_lost: list[Callable[[], None]] = []
        self._pump = asyncio.get_running_loop().create_task(self._read(), name=f"agent-stream:{name}")

    @classmethod
    async def open(cls, name: str, sock: socket.socket) -> AgentChannel:
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**24)
        return cls(name, reader, writer)

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
        stdout = bytearray()
        try:
            while True:
                header = await self._reader.readexactly(8)
                size = int.from_bytes(header[4:8], "big")
                payload = await self._reader.readexactly(size) if size else b""
                if header[0] == _STDERR:
                    logger.warning(
                        "exec agent wrote to stderr",
                        extra={"fields": {"sandbox": self.name, "text": payload[:2000].decode("utf-8", "replace")}},
                    )
                    continue
                if header[0] != _STDOUT:
                    continue
                stdout += payload
                while (end := stdout.find(b"\n")) >= 0:
                    line = bytes(stdout[:end])
                    del stdout[: end + 1]
                    self._dispatch(line)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._lose()

    def _dispatch(self, line: bytes) -> None:
        try:
            reply = json.loads(line)
            future = self._pending.pop(str(reply["id"]), None)
        except (ValueError, KeyError, TypeError):
            logger.warning("unreadable line from the exec agent", extra={"fields": {"sandbox": self.name}})
            return
        if future is not None and not future.done():
            future.set_result(reply)

    def _lose(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SandboxLost(self.name))
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
            raise SandboxLost(self.name)
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
            raise SandboxLost(self.name) from None

    async def cancel(self, call_id: str) -> None:
        """Stop a running request (``"*"``: every request, including ones sent on an earlier stream)."""
        with contextlib.suppress(SandboxLost):
            await self.begin("cancel", {"target": call_id})

    async def ping(self, wait_s: float) -> None:
        """Raises ``SandboxLost`` or ``TimeoutError`` unless the agent answers within ``wait_s``."""
        await self.call("ping", {}, timeout_ms=None, wait_s=wait_s)

    async def detach(self) -> None:
        """Close the stream without treating it as a lost sandbox (the container keeps running)."""
        self._on_lost.clear()
        await self.close()

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._pump
        self._lose()


def parse_reply(raw: dict[str, Any]) -> AgentReply:
    blocks = raw.get("content") or []
    text = "".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict))
    return AgentReply(text=text, is_error=bool(raw.get("is_error")))
