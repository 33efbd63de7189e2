"""Live sources for the session event stream: the session's log subject and its delta subject."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

from corral.bus import Bus, StoredMessage
from corral.contracts.subjects import SESSIONS_STREAM, deltas, session_log


class SessionFeed(Protocol):
    async def open_log(self, session_id: str) -> AsyncIterator[bytes]:
        """Start following the session's log; the iterator yields every record stored after this returns."""
        ...

    async def open_deltas(self, session_id: str) -> AsyncIterator[bytes]:
        """Live ``event_start``/``event_delta`` payloads (never stored; best effort)."""
        ...


class BusFeed:
    """``SessionFeed`` over JetStream (ordered consumer on the log subject) and core NATS (deltas)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def open_log(self, session_id: str) -> AsyncIterator[bytes]:
        # Pin the position now rather than asking for "new messages" when the consumer is created
        # (that happens on the first read, after the response headers are out): a record appended
        # in between is then delivered, never skipped.
        subject = session_log(session_id)
        last = await self._bus.last_seq(SESSIONS_STREAM, subject)
        return _payloads(self._bus.follow(SESSIONS_STREAM, subject, after_seq=last))

    async def open_deltas(self, session_id: str) -> AsyncIterator[bytes]:
        return _core_payloads(self._bus.subscribe_core(deltas(session_id)))


async def close_iterator(iterator: AsyncIterator[Any]) -> None:
    """Close an async generator (its ``finally`` removes the subscription); other iterators need nothing."""
    if isinstance(iterator, AsyncGenerator):
        await iterator.aclose()


async def _payloads(messages: AsyncIterator[StoredMessage]) -> AsyncIterator[bytes]:
    try:
        async for message in messages:
            yield message.data
    finally:
        await close_iterator(messages)


async def _core_payloads(messages: AsyncIterator[tuple[bytes, dict[str, str]]]) -> AsyncIterator[bytes]:
    try:
        async for data, _headers in messages:
            yield data
    finally:
        await close_iterator(messages)
