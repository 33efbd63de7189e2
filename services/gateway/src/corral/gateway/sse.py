"""The session event stream (``GET /v1/sessions/{id}/events/stream``) as Server-Sent Events.

Frames, as the SDK 2.10.0 parser needs them (it drops a frame without an ``event:`` line)::

    event: agent.message
    id: sevt_01...
    data: {"type":"agent.message","id":"sevt_01...",...}

Stored log records are forwarded as stored (same id as the list endpoint); the session-store's
control records are skipped, except the deletion mark, which becomes a final ``session.deleted``
frame and ends the stream. Deltas (``event_start``/``event_delta``) come from a core subject and
are forwarded only for the event types the client asked for. ``event: ping`` frames keep an idle
connection alive.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, Final

import anyio
from pydantic import ValidationError

from corral.contracts import ids
from corral.contracts.clock import now_rfc3339
from corral.contracts.log import CONTROL_RECORD_TYPES, SessionDeleted, parse_session_record
from corral.gateway import metrics
from corral.gateway.feed import close_iterator

logger = logging.getLogger(__name__)

PING: Final = b"event: ping\ndata: {}\n\n"
DELTA_EVENT_TYPES: Final = frozenset({"agent.message", "agent.thinking"})
MAX_EVENT_DELTAS: Final = 100
_FINISHED_MEMORY: Final = 1024
DELETION_RECORD: Final[str] = SessionDeleted.model_fields["type"].default


def frame(event: str, data: Mapping[str, Any], *, event_id: str | None = None) -> bytes:
    """One SSE frame: ``event:``, optional ``id:``, one compact JSON ``data:`` line, blank line."""
    lines = [f"event: {_one_line(event)}"]
    if event_id:
        lines.append(f"id: {_one_line(event_id)}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n\n").encode()


def _deleted_at(record: dict[str, Any]) -> str:
    try:
        control = parse_session_record(record)
    except ValidationError:
        return now_rfc3339()
    return control.deleted_at if isinstance(control, SessionDeleted) else now_rfc3339()


def _one_line(value: str) -> str:
    return value.replace("\r", "").replace("\n", "")


def record_frame(raw: bytes) -> tuple[bytes | None, str | None, bool]:
    """The frame for one stored record (``None`` to skip it), the event's id, and whether the stream ends."""
    try:
        record = json.loads(raw)
    except ValueError:
        logger.warning("skipping a session log record that is not JSON")
        return None, None, False
    kind = record.get("type") if isinstance(record, dict) else None
    if not isinstance(kind, str):
        logger.warning("skipping a session log record without a type")
        return None, None, False
    if kind in CONTROL_RECORD_TYPES:
        if kind != DELETION_RECORD:
            return None, None, False
        deleted = {"type": "session.deleted", "id": ids.new_id(ids.EVENT), "processed_at": _deleted_at(record)}
        return frame("session.deleted", deleted, event_id=deleted["id"]), None, True
    event_id = record.get("id")
    event_id = event_id if isinstance(event_id, str) else None
    return frame(kind, record, event_id=event_id), event_id, False


class DeltaFilter:
    """Which delta payloads this connection forwards.

    An ``event_start`` passes when its event type was requested (once per event id); an
    ``event_delta`` passes when its event's start did and the finished event has not arrived yet,
    so the deltas a client sees always concatenate to a prefix of the final text.
    """

    def __init__(self, types: frozenset[str]) -> None:
        self._types = types
        self._open: set[str] = set()
        self._finished: OrderedDict[str, None] = OrderedDict()

    def frame(self, raw: bytes) -> bytes | None:
        try:
            payload = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        kind = payload.get("type")
        if kind == "event_start":
            event = payload.get("event")
            if not isinstance(event, dict) or event.get("type") not in self._types:
                return None
            event_id = event.get("id")
            if not isinstance(event_id, str) or event_id in self._open or event_id in self._finished:
                return None
            self._open.add(event_id)
            return frame("event_start", payload)
        if kind == "event_delta" and payload.get("event_id") in self._open:
            return frame("event_delta", payload)
        return None

    def finish(self, event_id: str) -> None:
        """The stored event arrived: its preview is over."""
        if event_id in self._open:
            self._open.discard(event_id)
            self._finished[event_id] = None
            while len(self._finished) > _FINISHED_MEMORY:
                self._finished.popitem(last=False)


class StreamRegistry:
    """The open streams, so a shutdown can end them instead of waiting for clients to leave."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[bytes | None]] = set()
        self.closing = False

    def add(self, queue: asyncio.Queue[bytes | None]) -> None:
        if queue not in self._queues:
            self._queues.add(queue)
            metrics.OPEN_STREAMS.inc()

    def discard(self, queue: asyncio.Queue[bytes | None]) -> None:
        if queue in self._queues:
            self._queues.discard(queue)
            metrics.OPEN_STREAMS.dec()

    def close_all(self) -> None:
        self.closing = True
        for queue in self._queues:
            queue.put_nowait(None)

    def __len__(self) -> int:
        return len(self._queues)


async def event_stream(
    log: AsyncIterator[bytes],
    deltas: AsyncIterator[bytes] | None,
    *,
    delta_types: frozenset[str],
    heartbeat_s: float,
    registry: StreamRegistry | None = None,
    session_id: str = "",
) -> AsyncGenerator[bytes, None]:
    """SSE bytes for one connection, until the session is deleted, the log ends or the consumer stops.

    Both sources are pumped into one queue by their own tasks; when this generator is closed or
    cancelled (the client went away), the tasks are cancelled and both subscriptions closed.
    """
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    previews = DeltaFilter(delta_types)

    async def pump_log() -> None:
        try:
            async for raw in log:
                out, event_id, last = record_frame(raw)
                if event_id is not None:
                    previews.finish(event_id)
                if out is not None:
                    queue.put_nowait(out)
                if last:
                    break
        except Exception:
            logger.exception("session stream failed", extra={"fields": {"session_id": session_id}})
        finally:
            await close_iterator(log)
            queue.put_nowait(None)

    async def pump_deltas(source: AsyncIterator[bytes]) -> None:
        try:
            async for raw in source:
                out = previews.frame(raw)
                if out is not None:
                    queue.put_nowait(out)
        except Exception:
            logger.exception("session delta stream failed", extra={"fields": {"session_id": session_id}})
        finally:
            await close_iterator(source)

    tasks = [asyncio.create_task(pump_log(), name=f"sse-log-{session_id}")]
    if deltas is not None:
        tasks.append(asyncio.create_task(pump_deltas(deltas), name=f"sse-deltas-{session_id}"))
    if registry is not None:
        registry.add(queue)
        if registry.closing:
            queue.put_nowait(None)
    try:
        while True:
            try:
                async with asyncio.timeout(heartbeat_s):
                    item = await queue.get()
            except TimeoutError:
                yield PING
                continue
            if item is None:
                return
            yield item
    finally:
        if registry is not None:
            registry.discard(queue)
        for task in tasks:
            task.cancel()
        # Starlette cancels this generator through an anyio scope when the client disconnects;
        # shield the clean-up so the subscriptions are really gone before we return.
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*tasks, return_exceptions=True)
            await close_iterator(log)
            if deltas is not None:
                await close_iterator(deltas)
