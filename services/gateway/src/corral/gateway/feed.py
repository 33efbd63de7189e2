"""Live sources for the session event stream: the session's log (from the gateway's one follow of
every session's log, ``corral.gateway.fanout``) and its delta subject."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

from corral.bus import Bus
from corral.contracts.subjects import deltas
from corral.gateway.fanout import RecordSink, SessionFanout


class SessionFeed(Protocol):
    async def attach_log(self, session_id: str, sink: RecordSink) -> int:
        """Put every record of the session stored after this returns into ``sink``, in order, until
        ``detach_log``; returns the sequence at or before which a record put there is to be dropped."""
        ...

    def detach_log(self, session_id: str, sink: RecordSink) -> None: ...

    async def open_deltas(self, session_id: str) -> AsyncIterator[bytes]:
        """Live ``event_start``/``event_delta`` payloads (never stored; best effort)."""
        ...


class BusFeed:
    """``SessionFeed`` over the gateway's shared follow of the session log (``SessionFanout``) and
    core NATS (deltas)."""

    def __init__(self, bus: Bus, fanout: SessionFanout) -> None:
        self._bus = bus
        self._fanout = fanout

    async def attach_log(self, session_id: str, sink: RecordSink) -> int:
        # The sink is attached before this returns (before the response headers go out): a record
        # appended in between is delivered, never skipped.
        return await self._fanout.attach(session_id, sink)

    def detach_log(self, session_id: str, sink: RecordSink) -> None:
        self._fanout.detach(session_id, sink)

    async def open_deltas(self, session_id: str) -> AsyncIterator[bytes]:
        return _core_payloads(self._bus.subscribe_core(deltas(session_id)))


async def close_iterator(iterator: AsyncIterator[Any]) -> None:
    """Close an async generator (its ``finally`` removes the subscription); other iterators need nothing."""
    if isinstance(iterator, AsyncGenerator):
        await iterator.aclose()


async def _core_payloads(messages: AsyncIterator[tuple[bytes, dict[str, str]]]) -> AsyncIterator[bytes]:
    try:
        async for data, _headers in messages:
            yield data
    finally:
        await close_iterator(messages)
