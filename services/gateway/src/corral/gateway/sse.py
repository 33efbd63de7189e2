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

An open stream costs one ``StreamInbox`` (a list and at most one waiting future and timer, where an
``asyncio.Queue`` holds three deques and an event: about 3.7 KB less per stream) and the request's own
task, which also notices the client leaving (``corral.gateway.disconnect``: no task waiting on
``receive``), plus a task pumping deltas when they were asked for: no StreamingResponse task group,
no generator per source. The route itself is served in front of FastAPI (``corral.gateway.streamroute``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import anyio
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from corral.bus import StoredMessage
from corral.contracts import ids
from corral.contracts.clock import now_rfc3339
from corral.contracts.log import CONTROL_RECORD_TYPES, SessionDeleted, parse_session_record
from corral.gateway import metrics
from corral.gateway.disconnect import ClientWatch
from corral.gateway.feed import SessionFeed, close_iterator

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


class StreamInbox:
    """An open stream's one queue: items in arrival order, for one reader (the stream's ``_write``).

    ``put_nowait`` never blocks or fails (the follow and the delta pump must not wait on a slow
    client); ``get`` waits for the next item; ``wait`` waits for an item, a ``wake`` (the client's
    ``receive`` has news: ``corral.gateway.disconnect``) or a timeout, on one future and one timer.
    """

    __slots__ = ("_head", "_items", "_waiter")

    def __init__(self) -> None:
        # A list read from ``_head`` (an idle stream's empty list is 56 bytes, a deque's block ~700):
        # emptied when read to the end, its read part cut off once it is half the list.
        self._items: list[StreamItem] = []
        self._head = 0
        self._waiter: asyncio.Future[bool] | None = None

    def put_nowait(self, item: StreamItem) -> None:
        self._items.append(item)
        self.wake()

    def wake(self) -> None:
        """End the reader's ``wait`` (without an item)."""
        _release(self._waiter, False)

    async def wait(self, timeout_s: float) -> bool:
        """Until an item is there, ``wake`` is called or ``timeout_s`` passed; whether it timed out."""
        if self.qsize():
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(timeout_s, _release, waiter, True)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def get(self) -> StreamItem:
        while not self.qsize():
            await self.wait(3600.0)
        return self.pop()

    def pop(self) -> StreamItem:
        """The next item (the inbox must not be empty: ``qsize``)."""
        items, head = self._items, self._head
        item, items[head] = items[head], None
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= _COMPACT_AFTER and 2 * head >= len(items):
            del items[:head]
            head = 0
        self._head = head
        return item

    def qsize(self) -> int:
        return len(self._items) - self._head


_COMPACT_AFTER: Final = 64


def _release(waiter: asyncio.Future[bool] | None, timed_out: bool) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(timed_out)


class StreamRegistry:
    """The open streams, so a shutdown can end them instead of waiting for clients to leave."""

    def __init__(self) -> None:
        self._queues: set[StreamInbox] = set()
        self.closing = False

    def add(self, queue: StreamInbox) -> None:
        if queue not in self._queues:
            self._queues.add(queue)
            metrics.OPEN_STREAMS.inc()

    def discard(self, queue: StreamInbox) -> None:
        if queue in self._queues:
            self._queues.discard(queue)
            metrics.OPEN_STREAMS.dec()

    def close_all(self) -> None:
        self.closing = True
        for queue in self._queues:
            queue.put_nowait(None)

    def __len__(self) -> int:
        return len(self._queues)


#: What an open stream's one queue holds: a stored record of its session (put there by the
#: gateway's follow), a delta payload (from its delta subscription), or ``None``: end the stream
#: (the log ended, the client left, the gateway is stopping).
StreamItem = StoredMessage | bytes | None


class EventStreamResponse(Response):
    """One connection's event stream, written as a raw ASGI response by the request's own task.

    Everything the stream waits for arrives in its one queue: the session's records (the gateway's
    follow puts them there: the queue was attached by ``SessionFeed.attach_log`` before this response
    was made, and records at or before ``after_seq`` are dropped, so each record is sent once, in
    order), the delta payloads (a task pumps them from the delta subscription, only when deltas were
    asked for), and ``None`` when the gateway stops (``StreamRegistry.close_all``). The client leaving
    wakes the same wait (``ClientWatch``: no task of its own). An idle queue sends a ping every
    ``heartbeat_s``. However it ends, the queue is detached from the follow and the registry, the
    pending ``receive`` closed, and the delta subscription closed, before this returns.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        feed: SessionFeed,
        session_id: str,
        queue: StreamInbox,
        *,
        after_seq: int,
        deltas: AsyncIterator[bytes] | None,
        delta_types: frozenset[str],
        heartbeat_s: float,
        registry: StreamRegistry,
        headers: Mapping[str, str],
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self._feed, self._session_id, self._queue = feed, session_id, queue
        self._after_seq, self._deltas = after_seq, deltas
        self._previews = DeltaFilter(delta_types) if deltas is not None else None
        self._heartbeat_s, self._registry = heartbeat_s, registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002 (ASGI)
        queue = self._queue
        self._registry.add(queue)
        if self._registry.closing:
            queue.put_nowait(None)
        client = ClientWatch(receive, queue.wake)
        pump = asyncio.create_task(self._pump_deltas(self._deltas)) if self._deltas is not None else None
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if await self._write(send, client):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # a server that says so when the client has gone
            pass
        finally:
            self._registry.discard(queue)
            self._feed.detach_log(self._session_id, queue)
            client.close()
            if pump is not None:
                pump.cancel()
                # The request's task may be cancelled (the server stopping): the clean-up still runs to the end.
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(pump, return_exceptions=True)
                    if self._deltas is not None:
                        await close_iterator(self._deltas)

    async def _write(self, send: Send, client: ClientWatch) -> bool:
        """Send what arrives until the stream ends; whether the client is still there to be told so."""
        queue, delivered = self._queue, self._after_seq
        while not client.poll():
            if not queue.qsize():
                if await queue.wait(self._heartbeat_s):
                    await send({"type": "http.response.body", "body": PING, "more_body": True})
                continue
            item = queue.pop()
            if item is None:
                return True
            if isinstance(item, bytes):  # a delta payload
                out = self._previews.frame(item) if self._previews is not None else None
                last = False
            else:
                if item.seq <= delivered:
                    continue
                delivered = item.seq
                out, event_id, last = record_frame(item.data)
                if event_id is not None and self._previews is not None:
                    self._previews.finish(event_id)
            if out is not None:
                await send({"type": "http.response.body", "body": out, "more_body": True})
            if last:
                return True
        return False

    async def _pump_deltas(self, source: AsyncIterator[bytes]) -> None:
        try:
            async for raw in source:
                self._queue.put_nowait(raw)
        except Exception:
            logger.exception("session delta stream failed", extra={"fields": {"session_id": self._session_id}})
