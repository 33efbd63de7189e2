"""Moving bytes between a sandbox's connection and its destination, with an idle timeout.

``splice`` copies both ways until both sides have finished (each end-of-stream is passed on as a
half-close) or nothing has moved either way for ``idle_s``. ``copy_body`` copies exactly one request
body, as its headers frame it, so nothing after it (a second, unchecked request) reaches upstream.
Bytes pass through untouched and are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from corral.credential_proxy.http_head import BadRequest, Body

CHUNK = 65536
_MAX_CHUNK_LINE = 4096
_CHUNK_SIZE = re.compile(rb"^[0-9A-Fa-f]{1,16}$")

T = TypeVar("T")


class Idle(Exception):
    """Nothing moved either way for the idle timeout."""


class Activity:
    """When bytes last moved on a connection (either way)."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()

    def touch(self) -> None:
        self._last = self._loop.time()

    async def within(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await ``make()``, giving up (``Idle``) once the whole connection has been idle for ``idle_s``.

        ``make`` is called again after a wait that ran out while the other direction was busy, so it
        must be safe to cancel and repeat (stream reads and ``drain`` are).
        """
        while True:
            remaining = self._last + self.idle_s - self._loop.time()
            if remaining <= 0:
                raise Idle
            deadline = asyncio.timeout(remaining)
            try:
                async with deadline:
                    result = await make()
            except TimeoutError:
                if deadline.expired():
                    continue
                raise
            self.touch()
            return result


async def _send(writer: asyncio.StreamWriter, data: bytes, activity: Activity) -> None:
    writer.write(data)
    await activity.within(writer.drain)


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: Activity) -> None:
    """Copy until ``reader`` ends, then half-close ``writer``."""
    while data := await activity.within(functools.partial(reader.read, CHUNK)):
        await _send(writer, data, activity)
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()


async def splice(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    activity: Activity,
) -> None:
    """Copy both ways until both directions have ended.

    Raises:
        Idle: nothing moved for the idle timeout.
        OSError: either side failed.
    """
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(pump(client[0], upstream[1], activity))
        tasks.create_task(pump(upstream[0], client[1], activity))


async def copy_body(body: Body, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: Activity) -> None:
    """Copy one request body framed as ``body`` says, and nothing after it.

    Raises:
        BadRequest: a malformed chunked body.
        asyncio.IncompleteReadError: the client closed before the body ended.
    """
    if body.kind == "length":
        left = body.length
        while left:
            data = await activity.within(functools.partial(reader.read, min(left, CHUNK)))
            if not data:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(data)
            await _send(writer, data, activity)
    elif body.kind == "chunked":
        await _copy_chunked(reader, writer, activity)


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: Activity) -> None:
    while True:
        line = await activity.within(functools.partial(reader.readuntil, b"\r\n"))
        size_text = line[:-2].split(b";", 1)[0].strip(b" \t")
        if len(line) > _MAX_CHUNK_LINE or not _CHUNK_SIZE.fullmatch(size_text):
            raise BadRequest("malformed chunk size line")
        size = int(size_text, 16)
        await _send(writer, line, activity)
        if size == 0:
            break
        left = size + 2  # the data and its CRLF
        while left:
            data = await activity.within(functools.partial(reader.read, min(left, CHUNK)))
            if not data:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(data)
            await _send(writer, data, activity)
    while True:  # trailer fields, then the blank line
        line = await activity.within(functools.partial(reader.readuntil, b"\r\n"))
        await _send(writer, line, activity)
        if line == b"\r\n":
            return
