"""Snapshots of a session's fold, so a harness that takes a long session over resumes at once.

Stored in the JetStream object store ``subjects.SNAPSHOT_BUCKET`` (spec ``subjects.SNAPSHOT_SPEC``),
one object per session (name = session id), value JSON ``{"format", "session_id", "seq", "state"}``:
``state`` is ``SessionFold.state()`` at stream sequence ``seq``. An object store rather than a KV
bucket because the fold holds the whole conversation, which passes the server's ``max_payload``
(the largest KV value) in exactly the sessions snapshots are for; the object store chunks it.

A snapshot is only a cache of the log. ``resume`` uses it when it can and folds from the start
otherwise: when there is none, when its ``format`` is not ``fold.FORMAT`` (or its conversation
truncates tool results at another length than this harness's setting), when it cannot be read,
and when it claims more than the log holds (its ``seq`` past the subject's last record, or not a
record of this session, as after a stream restore). The lease holder writes one every
``every_events`` folded events, at a turn's end and when it lets the session go, in the background
(``SnapshotWriter``): the fold is encoded at once, so the snapshot names exactly the stream sequence
its state is of, and the write is a task of the session's run, never awaited by a step; the run
waits for it before the lease is let go (so the next holder's snapshot is never overwritten by an
older one) and cancels it when the lease is lost or the worker stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from corral.bus import Bus, ObjectBucket
from corral.contracts import subjects
from corral.harness import requestbody
from corral.harness.fold import FORMAT, SessionFold
from corral.harness.sessionlog import LogSource

logger = logging.getLogger(__name__)

Source = Literal["snapshot", "missing", "format", "unreadable", "past_log_end"]
"""Where a resumed fold came from: a usable snapshot, or the log from the start because of ..."""


class Snapshots(Protocol):
    async def load(self, session_id: str) -> bytes | None: ...

    async def save(self, session_id: str, data: bytes) -> None: ...


class BusSnapshots:
    def __init__(self, bucket: ObjectBucket) -> None:
        self._bucket = bucket

    @classmethod
    async def bind(cls, bus: Bus) -> BusSnapshots:
        return cls(await bus.object_bucket(subjects.SNAPSHOT_SPEC))

    async def load(self, session_id: str) -> bytes | None:
        return await self._bucket.get(session_id)

    async def save(self, session_id: str, data: bytes) -> None:
        await self._bucket.put(session_id, data)


def encode(session_id: str, fold: SessionFold) -> bytes:
    """The snapshot's JSON (``requestbody.encode`` of the value), its state joined from the JSON the
    fold keeps for its conversation's messages (``SessionFold.state_json``): encoding the whole
    conversation again would cost more the longer the session, on the event loop."""
    head = requestbody.encode({"format": FORMAT, "session_id": session_id, "seq": fold.last_seq})
    return requestbody.with_field(head, "state", fold.state_json()).encode()


def decode(session_id: str, data: bytes, *, max_result_chars: int | None = None) -> SessionFold | Source:
    """The fold a snapshot holds, or why it cannot be used (``max_result_chars``: this harness's)."""
    try:
        value: Any = json.loads(data)
        if not isinstance(value, dict) or value.get("format") != FORMAT:
            return "format"
        if value.get("session_id") != session_id:
            return "unreadable"
        fold = SessionFold.restore(value["state"])
        if fold.last_seq != value["seq"]:
            return "unreadable"
        if fold.conversation.max_result_chars != max_result_chars:
            return "format"
        return fold
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unreadable"


async def _load_and_log_end(
    session_id: str, snapshots: Snapshots, log: LogSource, load_timeout_s: float
) -> tuple[bytes | Exception | None, int | Exception]:
    """The snapshot (or why it could not be read) and the log's last sequence (or why it could not
    be looked up: that matters only when there is a snapshot to check), looked up at once."""

    async def load() -> bytes | Exception | None:
        try:
            async with asyncio.timeout(load_timeout_s):  # an object read can wait on chunks forever
                return await snapshots.load(session_id)
        except Exception as exc:  # a cache: an unreadable one costs a fold from the start, never the session
            logger.warning(
                "could not read the session's snapshot", extra={"fields": {"session_id": session_id}}, exc_info=True
            )
            return exc

    async def log_end() -> int | Exception:
        try:
            return await log.last_seq(session_id)
        except Exception as exc:
            return exc

    async with asyncio.TaskGroup() as tg:
        loading = tg.create_task(load())
        end = tg.create_task(log_end())
    return loading.result(), end.result()


@dataclass(frozen=True)
class Resumed:
    fold: SessionFold
    source: Source
    log_end: int = 0
    """The log's last sequence, looked up (after the lease was taken) beside the snapshot's read; 0
    when it was not, or the lookup failed."""


LOAD_TIMEOUT_S: Final = 5.0
"""How long reading a snapshot may take before the log is folded from the start instead."""


async def resume(
    session_id: str,
    snapshots: Snapshots | None,
    log: LogSource,
    *,
    max_result_chars: int | None = None,
    load_timeout_s: float = LOAD_TIMEOUT_S,
) -> Resumed:
    """The fold to follow the log from: the session's snapshot, checked against the log, else empty
    (``max_result_chars``: where this harness's conversation truncates tool results)."""
    empty = SessionFold.empty(max_result_chars=max_result_chars)
    if snapshots is None:
        return Resumed(empty, "missing")
    data, last = await _load_and_log_end(session_id, snapshots, log, load_timeout_s)
    end = last if isinstance(last, int) else 0
    if isinstance(data, Exception):
        return Resumed(empty, "unreadable", end)
    if data is None:
        return Resumed(empty, "missing", end)
    found = decode(session_id, data, max_result_chars=max_result_chars)
    if isinstance(found, str):
        return Resumed(empty, found, end)
    if isinstance(last, Exception):
        raise last
    if found.last_seq > last or not await log.holds(session_id, found.last_seq):
        logger.warning(
            "the session's snapshot is past the end of its log; folding the log from the start",
            extra={"fields": {"session_id": session_id, "snapshot_seq": found.last_seq, "log_seq": last}},
        )
        return Resumed(empty, "past_log_end", end)
    return Resumed(found, "snapshot", end)


WRITE_TIMEOUT_S: Final = 30.0
"""How long one snapshot write may take before it is given up (the next holder folds a little more)."""


class SnapshotWriter:
    """Writes a session's snapshots in the background of its run: at most one write in flight, each
    of the fold as it was when offered, as a task of the run's task group (so the run waits for it
    before its lease is let go, and it is cancelled with the run)."""

    def __init__(
        self,
        snapshots: Snapshots | None,
        session_id: str,
        tg: asyncio.TaskGroup,
        *,
        every_events: int,
        written_events: int,
    ) -> None:
        self._snapshots = snapshots
        self._session_id = session_id
        self._tg = tg
        self._every = every_events
        self.written_events = written_events
        """``SessionFold.events`` of the last snapshot written (or resumed from)."""
        self._writing: asyncio.Task[None] | None = None

    @property
    def writing(self) -> bool:
        return self._writing is not None and not self._writing.done()

    def offer(self, fold: SessionFold) -> bool:
        """Start writing the fold's snapshot if ``every_events`` events were folded since the last
        one and no write is in flight; whether one was started. The fold is encoded now: what is
        written is its state at ``fold.last_seq``, whatever is folded while the write runs."""
        if self._snapshots is None or self.writing or fold.events - self.written_events < self._every:
            return False
        data = encode(self._session_id, fold)
        self._writing = self._tg.create_task(
            self._write(self._snapshots, data, seq=fold.last_seq, events=fold.events),
            name=f"snapshot-{self._session_id}",
        )
        return True

    async def _write(self, snapshots: Snapshots, data: bytes, *, seq: int, events: int) -> None:
        fields = {"session_id": self._session_id, "seq": seq, "events": events}
        started = time.monotonic()
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await snapshots.save(self._session_id, data)
        except Exception:  # a cache: the next holder folds a little more of the log
            logger.warning("could not write the session's snapshot", extra={"fields": fields}, exc_info=True)
            return
        self.written_events = max(self.written_events, events)
        write_ms = round((time.monotonic() - started) * 1000, 1)
        logger.info("snapshot written", extra={"fields": {**fields, "bytes": len(data), "write_ms": write_ms}})
