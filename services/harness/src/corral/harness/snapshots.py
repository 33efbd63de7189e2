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
``every_events`` folded events, at a turn's end and when it lets the session go.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from corral.bus import Bus, ObjectBucket
from corral.contracts import subjects
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
    value = {"format": FORMAT, "session_id": session_id, "seq": fold.last_seq, "state": fold.state()}
    return json.dumps(value, separators=(",", ":")).encode()


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


@dataclass(frozen=True)
class Resumed:
    fold: SessionFold
    source: Source


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
    try:
        async with asyncio.timeout(load_timeout_s):  # an object read can wait on chunks forever
            data = await snapshots.load(session_id)
    except Exception:  # a cache: an unreadable one costs a fold from the start, never the session
        logger.warning(
            "could not read the session's snapshot", extra={"fields": {"session_id": session_id}}, exc_info=True
        )
        return Resumed(empty, "unreadable")
    if data is None:
        return Resumed(empty, "missing")
    found = decode(session_id, data, max_result_chars=max_result_chars)
    if isinstance(found, str):
        return Resumed(empty, found)
    last = await log.last_seq(session_id)
    if found.last_seq > last or not await log.holds(session_id, found.last_seq):
        logger.warning(
            "the session's snapshot is past the end of its log; folding the log from the start",
            extra={"fields": {"session_id": session_id, "snapshot_seq": found.last_seq, "log_seq": last}},
        )
        return Resumed(empty, "past_log_end")
    return Resumed(found, "snapshot")
