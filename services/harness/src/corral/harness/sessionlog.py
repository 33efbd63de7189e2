"""The session's log, read straight from JetStream and folded as it arrives, while the lease is held.

``LogSource`` is the port (``BusLog``: the session's subject on ``CORRAL_SESSIONS``, through
``Bus.follow``/``Bus.last_seq``, which hand back one message per record however it was stored).
``following`` starts one live, ordered read of the subject after the fold's ``last_seq`` and feeds
each record, decoded once, into the ``SessionFold``; the driver waits on positions, never re-reads:

- ``reach(seq)``: after an append, wait until the fold holds our own records;
- ``catch_up()``: wait until the fold holds everything stored when called (one "last sequence"
  lookup), so a decision never acts on a log that is behind.

Writes never go this way: appends stay requests to the session-store, which checks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from corral.bus import Bus, BusError
from corral.contracts.subjects import SESSIONS_STREAM, session_log
from corral.harness.fold import Decoded, SessionFold, decode
from corral.harness.store import StoreUnavailable

logger = logging.getLogger(__name__)

#: How long a cancelled log read may take to end before it is cancelled again.
_STOP_RETRY_S = 1.0


@dataclass(frozen=True)
class LogEntry:
    """One record of the session subject: its stream sequence and its bytes; ``data`` is ``None``
    for a message that completes no record (a part of one being written, or abandoned): the read
    has passed ``seq``, and nothing is folded."""

    seq: int
    data: bytes | None


class LogSource(Protocol):
    async def last_seq(self, session_id: str) -> int:
        """Stream sequence of the session's newest record (0 when it has none)."""
        ...

    def follow(self, session_id: str, after_seq: int) -> AsyncIterator[LogEntry]:
        """The session's records after ``after_seq``, in order, then live ones, until closed."""
        ...

    async def holds(self, session_id: str, seq: int) -> bool:
        """Whether stream sequence ``seq`` is (still) a record of this session."""
        ...


class BusLog:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def last_seq(self, session_id: str) -> int:
        try:
            return await self._bus.last_seq(SESSIONS_STREAM, session_log(session_id))
        except (BusError, TimeoutError) as exc:
            raise StoreUnavailable(f"the session log could not be read: {type(exc).__name__}") from exc

    async def follow(self, session_id: str, after_seq: int) -> AsyncIterator[LogEntry]:
        messages = self._bus.follow_positions(SESSIONS_STREAM, session_log(session_id), after_seq=after_seq)
        try:
            async for message in messages:
                yield LogEntry(message, None) if isinstance(message, int) else LogEntry(message.seq, message.data)
        finally:
            await close(messages)

    async def holds(self, session_id: str, seq: int) -> bool:
        try:
            message = await self._bus.get(SESSIONS_STREAM, seq)
        except Exception:  # not found (purged, or the stream is shorter): the answer is no
            return False
        return message.subject == session_log(session_id)


async def close(iterator: AsyncIterator[object]) -> None:
    """Close an async generator (its ``finally`` removes the subscription)."""
    if isinstance(iterator, AsyncGenerator):
        await iterator.aclose()


class SessionLog:
    """A session's fold, kept current by one live read of its subject (see ``following``)."""

    def __init__(self, source: LogSource, session_id: str, fold: SessionFold, *, reach_timeout_s: float) -> None:
        self.fold = fold
        self._source = source
        self._session_id = session_id
        self._timeout_s = reach_timeout_s
        self._moved = asyncio.Event()
        self._failed: BaseException | None = None
        self._passed = 0
        """The raw sequence the read has passed (records and parts of records alike)."""

    @property
    def failed(self) -> BaseException | None:
        """Why the read stopped, if it failed (a record it could not fold, the stream unreadable)."""
        return self._failed

    @property
    def position(self) -> int:
        """How far the read has got: ``fold.last_seq``, or past it, a part that completed no record."""
        return max(self.fold.last_seq, self._passed)

    async def reach(self, seq: int) -> None:
        """Wait until the fold holds the log up to ``seq`` (a seq of a record stored in parts is its
        last part's; a part of a record not (yet) completed counts as passed, never as folded).

        Raises:
            StoreUnavailable: the read failed, or did not get there within the timeout.
        """
        try:
            async with asyncio.timeout(self._timeout_s):
                while self.position < seq:
                    if self._failed is not None:
                        raise StoreUnavailable(f"reading the session log failed: {self._failed!r}")
                    await self._moved.wait()
        except TimeoutError:
            raise StoreUnavailable(
                f"the session log did not reach stream sequence {seq} (read up to {self.fold.last_seq})"
            ) from None

    async def catch_up(self, at_least: int = 0) -> None:
        """Wait until the fold holds every record stored when called (and at least ``at_least``)."""
        await self.reach(max(at_least, await self._source.last_seq(self._session_id)))

    def _moved_on(self) -> None:
        self._moved.set()
        self._moved = asyncio.Event()

    async def follow(self, on_record: Callable[[Decoded], None]) -> None:
        try:
            async for entry in self._source.follow(self._session_id, self.fold.last_seq):
                if entry.data is None:
                    self._passed = max(self._passed, entry.seq)
                    self._moved_on()
                    continue
                decoded = decode(entry.seq, entry.data)
                self.fold.apply(decoded)
                on_record(decoded)
                self._moved_on()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaces in the next reach(): the run ends and is retried later
            self._failed = exc
            self._moved_on()


@contextlib.asynccontextmanager
async def following(
    source: LogSource,
    session_id: str,
    fold: SessionFold,
    *,
    on_record: Callable[[Decoded], None],
    reach_timeout_s: float = 10.0,
) -> AsyncIterator[SessionLog]:
    """Follow the session's log from ``fold.last_seq`` while the block runs; ``on_record`` sees
    each record once folded (the interrupt watch)."""
    log = SessionLog(source, session_id, fold, reach_timeout_s=reach_timeout_s)
    reader = asyncio.create_task(log.follow(on_record), name=f"log-follow-{session_id}")
    try:
        yield log
    finally:
        await stop_reading(reader)


async def stop_reading(reader: asyncio.Task[None]) -> None:
    """Cancel the read and wait for it to end. A cancellation can be lost inside the NATS client (on
    Python 3.11 ``asyncio.wait_for`` drops one that arrives as the awaited reply does), which would
    leave the read following, and this run waiting on it, for good: so it is asked again until it
    ends."""
    reader.cancel()
    while not reader.done():
        done, _ = await asyncio.wait({reader}, timeout=_STOP_RETRY_S)
        if not done:
            logger.warning("the session log read did not stop when cancelled; cancelling it again")
            reader.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # its failure was already surfaced
        reader.result()
