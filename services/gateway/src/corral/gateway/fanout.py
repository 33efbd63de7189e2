"""One follow of every session's log per gateway, fanned out to the open event streams.

A gateway follows ``corral.sessions.*`` once, with one ordered consumer, from the stream's last
sequence when it started; each open stream registers a queue for its session and gets that
session's records from it. An open stream therefore costs a queue and a dictionary entry, not a
JetStream consumer (server state, a subscription, heartbeats and flow control each). The event
stream route attaches its own queue (``attach``), the one queue of the stream; ``open`` wraps a
queue of its own in an iterator (and resumes from a sequence).

Order and exactly-once, per stream: the follow delivers the stream in sequence order, so each
queue receives its session's records in order. A stream registers its queue *before* it reads
its subject's last sequence ``L``: every record stored after that read was not yet delivered when
the queue was registered, so it reaches the queue; records at or before ``L`` are dropped. A
stream that resumes from an earlier sequence reads ``(after_seq, L]`` from the log first, then
goes on with the queue, dropping what the read already gave.

A failed follow (the bus reconnecting) starts again after the last sequence it delivered: the
open streams see a pause, never a gap or a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Final, Protocol

from corral.bus import Bus, StoredMessage
from corral.contracts.subjects import SESSIONS_STREAM, SESSIONS_WILDCARD, session_id_of, session_log

logger = logging.getLogger(__name__)

RETRY_S: Final = 1.0
"""Wait before following again after the follow failed."""


class RecordSink(Protocol):
    """Where the follow puts a stream's records: its queue (``asyncio.Queue``)."""

    def put_nowait(self, item: StoredMessage, /) -> None: ...


class SessionFanout:
    """The gateway's one follow of the session log, and the queues of the streams open on it."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._queues: dict[str, set[RecordSink]] = {}
        self.position: int | None = None
        """The last stream sequence the follow delivered (``None`` before ``start``)."""

    async def start(self) -> None:
        """Fix where the follow begins: the stream's last sequence now. Call before any ``open``."""
        if self.position is None:
            self.position = await self._bus.stream_last_seq(SESSIONS_STREAM)

    def streams(self, session_id: str | None = None) -> int:
        """How many streams are open (on ``session_id``, or on any session)."""
        if session_id is not None:
            return len(self._queues.get(session_id, ()))
        return sum(len(queues) for queues in self._queues.values())

    async def run(self) -> None:
        """Follow and fan out until cancelled (again after a failure, from the last sequence delivered)."""
        await self.start()
        while True:
            try:
                async with contextlib.aclosing(
                    self._bus.follow_positions(SESSIONS_STREAM, SESSIONS_WILDCARD, after_seq=self.position)
                ) as follow:
                    async for item in follow:
                        if isinstance(item, int):
                            self.position = max(self.position or 0, item)
                            continue
                        self.position = max(self.position or 0, item.seq)
                        for queue in self._queues.get(session_id_of(item.subject), ()):
                            queue.put_nowait(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "following the session log failed; following again shortly",
                    extra={"fields": {"error": type(exc).__name__, "after_seq": self.position, "retry_s": RETRY_S}},
                )
            await asyncio.sleep(RETRY_S)

    async def attach(self, session_id: str, sink: RecordSink) -> int:
        """Put the session's records into ``sink`` from now on, until ``detach``; returns the session's
        last sequence ``L`` when the sink was attached: a record at or before ``L`` that reaches the
        sink anyway is to be dropped (the open stream's own queue: ``corral.gateway.sse``)."""
        if self.position is None:
            raise RuntimeError("SessionFanout.start() must run before streams open")
        self._queues.setdefault(session_id, set()).add(sink)
        try:
            return await self._bus.last_seq(SESSIONS_STREAM, session_log(session_id))
        except BaseException:
            self.detach(session_id, sink)
            raise

    async def open(self, session_id: str, *, after_seq: int | None = None) -> AsyncGenerator[bytes, None]:
        """The session's records stored after this returns (with ``after_seq``: after that
        sequence, the earlier ones read from the log first), in order, each once; close it to leave."""
        queue: asyncio.Queue[StoredMessage] = asyncio.Queue()
        last = await self.attach(session_id, queue)
        return self._records(session_id, queue, last, after_seq)

    async def _records(
        self, session_id: str, queue: asyncio.Queue[StoredMessage], last: int, after_seq: int | None
    ) -> AsyncGenerator[bytes, None]:
        try:
            delivered = last
            if after_seq is not None and after_seq < last:
                delivered = after_seq
                async for message in self._bus.read(SESSIONS_STREAM, session_log(session_id), after_seq=after_seq):
                    delivered = max(delivered, message.seq)
                    yield message.data
                delivered = max(delivered, last)
            while True:
                message = await queue.get()
                if message.seq > delivered:
                    delivered = message.seq
                    yield message.data
        finally:
            self.detach(session_id, queue)

    def detach(self, session_id: str, sink: RecordSink) -> None:
        """Stop putting the session's records into ``sink`` (nothing if it is not attached)."""
        sinks = self._queues.get(session_id)
        if sinks is not None:
            sinks.discard(sink)
            if not sinks:
                del self._queues[session_id]
