"""The session event stream: frame format, what is forwarded, deltas, heartbeats and clean-up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway_fakes import FakeFeed, FakeStore, client_for

from corral.bus import StoredMessage
from corral.contracts.api.errors import not_found
from corral.contracts.rpc import GetObject, Op
from corral.gateway.sse import (
    PING,
    DeltaFilter,
    EventStreamResponse,
    StreamInbox,
    StreamRegistry,
    frame,
    record_frame,
)


def raw(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def parse_frames(text: str) -> list[dict[str, str]]:
    frames = []
    for block in text.split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        frames.append(fields)
    return frames


USER_MESSAGE = {
    "type": "user.message",
    "id": "sevt_01U",
    "content": [{"type": "text", "text": "hi"}],
    "processed_at": None,
}
AGENT_MESSAGE = {
    "type": "agent.message",
    "id": "sevt_01A",
    "content": [{"type": "text", "text": "Hello there"}],
    "processed_at": "2026-01-01T00:00:01.000000Z",
}
ARCHIVED = {"type": "corral.session_archived", "archived_at": "2026-01-01T00:00:02.000000Z"}
DELETED = {"type": "corral.session_deleted", "deleted_at": "2026-01-01T00:00:03.000000Z"}


def test_a_frame_has_an_event_line_an_optional_id_and_one_compact_data_line() -> None:
    data = {"type": "agent.message", "id": "sevt_1", "content": [{"type": "text", "text": "a\nb ü"}]}
    assert frame("agent.message", data, event_id="sevt_1") == (
        b"event: agent.message\nid: sevt_1\n"
        b'data: {"type":"agent.message","id":"sevt_1","content":[{"type":"text","text":"a\\nb \xc3\xbc"}]}\n\n'
    )
    assert frame("event_delta", {"type": "event_delta"}) == b'event: event_delta\ndata: {"type":"event_delta"}\n\n'


def test_a_frame_never_lets_a_newline_into_the_event_or_id_line() -> None:
    assert frame("a\nb", {}, event_id="x\r\ny") == b"event: ab\nid: xy\ndata: {}\n\n"


def test_the_ping_frame_is_an_event_the_sdk_skips() -> None:
    assert PING == b"event: ping\ndata: {}\n\n"


def test_stored_events_are_forwarded_as_stored_with_their_id() -> None:
    out, event_id, last = record_frame(raw(USER_MESSAGE))
    assert (event_id, last) == ("sevt_01U", False)
    assert out == frame("user.message", USER_MESSAGE, event_id="sevt_01U")


def test_control_records_are_skipped_except_the_deletion_which_ends_the_stream() -> None:
    assert record_frame(raw(ARCHIVED)) == (None, None, False)
    assert record_frame(raw({"type": "corral.session_created", "workspace_id": "w"})) == (None, None, False)
    out, _, last = record_frame(raw(DELETED))
    assert last is True
    assert out is not None
    (parsed,) = parse_frames(out.decode())
    deleted = json.loads(parsed["data"])
    assert parsed["event"] == "session.deleted"
    assert parsed["id"] == deleted["id"]
    assert deleted["id"].startswith("sevt_")
    assert deleted == {"type": "session.deleted", "id": deleted["id"], "processed_at": "2026-01-01T00:00:03.000000Z"}


def test_records_that_are_not_json_objects_with_a_type_are_skipped() -> None:
    assert record_frame(b"not json") == (None, None, False)
    assert record_frame(b"[1]") == (None, None, False)
    assert record_frame(b'{"id": "sevt_1"}') == (None, None, False)


def test_deltas_pass_only_for_requested_types_and_only_until_the_event_is_stored() -> None:
    previews = DeltaFilter(frozenset({"agent.message"}))
    start = {"type": "event_start", "event": {"type": "agent.message", "id": "sevt_1"}}
    delta = {"type": "event_delta", "event_id": "sevt_1", "delta": {"type": "content_delta", "index": 0}}
    thinking = {"type": "event_start", "event": {"type": "agent.thinking", "id": "sevt_2"}}
    assert previews.frame(raw(delta)) is None  # no start seen yet
    assert previews.frame(raw(thinking)) is None  # not requested
    assert previews.frame(raw(start)) == frame("event_start", start)
    assert previews.frame(raw(start)) is None  # at most one start per event
    assert previews.frame(raw(delta)) == frame("event_delta", delta)
    previews.finish("sevt_1")
    assert previews.frame(raw(delta)) is None
    assert previews.frame(raw(start)) is None


@dataclass
class Connection:
    """One client connection to an ``EventStreamResponse``, driven as an ASGI server would."""

    bodies: list[bytes] = field(default_factory=list)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    sent: asyncio.Condition = field(default_factory=asyncio.Condition)
    _requested: bool = False

    async def receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            async with self.sent:
                self.bodies.append(message["body"])
                self.sent.notify_all()

    async def until(self, predicate: Callable[[list[bytes]], bool]) -> None:
        async with self.sent:
            await self.sent.wait_for(lambda: predicate(self.bodies))


async def open_stream(
    feed: FakeFeed, registry: StreamRegistry, *, deltas: bool = False, heartbeat_s: float = 10.0
) -> tuple[Connection, asyncio.Task[None], StreamInbox]:
    """What the route does (attach the queue, open the deltas), then the response, served in a task."""
    queue = StreamInbox()
    after = await feed.attach_log("sesn_1", queue)
    response = EventStreamResponse(
        feed,
        "sesn_1",
        queue,
        after_seq=after,
        deltas=await feed.open_deltas("sesn_1") if deltas else None,
        delta_types=frozenset({"agent.message"}),
        heartbeat_s=heartbeat_s,
        registry=registry,
        headers={},
    )
    connection = Connection()
    scope = {"type": "http", "asgi": {"spec_version": "2.3"}}
    return connection, asyncio.create_task(response(scope, connection.receive, connection.send)), queue  # type: ignore[arg-type]


async def test_an_idle_stream_sends_pings() -> None:
    feed, registry = FakeFeed(), StreamRegistry()
    connection, served, _ = await open_stream(feed, registry, heartbeat_s=0.01)
    async with asyncio.timeout(5):
        await connection.until(lambda bodies: bodies[:2] == [PING, PING])
        connection.gone.set()
        await served


async def test_a_client_that_disconnects_frees_the_streams_registration_and_both_subscriptions() -> None:
    feed, registry = FakeFeed(records=[raw(USER_MESSAGE)]), StreamRegistry()
    connection, served, queue = await open_stream(feed, registry, deltas=True)
    async with asyncio.timeout(5):
        await connection.until(lambda bodies: bodies == [frame("user.message", USER_MESSAGE, event_id="sevt_01U")])
        assert len(registry) == 1 and feed.attached == {queue}
        connection.gone.set()
        await served
    assert len(registry) == 0
    assert feed.attached == set()
    assert sorted(feed.closed) == ["deltas", "log"]


async def test_a_record_at_or_before_the_attach_sequence_is_not_sent_again() -> None:
    feed, registry = FakeFeed(), StreamRegistry()
    connection, served, queue = await open_stream(feed, registry)
    for seq, record in ((0, USER_MESSAGE), (1, AGENT_MESSAGE), (1, AGENT_MESSAGE), (2, DELETED)):
        queue.put_nowait(StoredMessage("corral.sessions.sesn_1", seq, raw(record), {}, None))
    async with asyncio.timeout(5):
        await served
    assert [f["event"] for f in parse_frames(b"".join(connection.bodies).decode())] == [
        "agent.message",
        "session.deleted",
    ]


async def test_a_shutdown_ends_every_open_stream() -> None:
    registry = StreamRegistry()
    feed = FakeFeed(records=[raw(USER_MESSAGE)])
    connection, served, _ = await open_stream(feed, registry)
    async with asyncio.timeout(5):
        await connection.until(lambda bodies: len(bodies) == 1)  # the stream is open (and registered)
        assert len(registry) == 1
        registry.close_all()
        await served
    assert len(registry) == 0
    assert feed.closed == ["log"]


async def test_the_stream_route_forwards_events_and_requested_deltas_then_ends_on_deletion() -> None:
    start = {"type": "event_start", "event": {"type": "agent.message", "id": "sevt_01A"}}
    delta = {
        "type": "event_delta",
        "event_id": "sevt_01A",
        "delta": {"type": "content_delta", "index": 0, "content": {"type": "text", "text": "Hello"}},
    }
    thinking = {"type": "event_start", "event": {"type": "agent.thinking", "id": "sevt_01T"}}
    feed = FakeFeed(
        records=[raw(USER_MESSAGE), raw(ARCHIVED), raw(AGENT_MESSAGE), raw(DELETED)],
        deltas=[raw(thinking), raw(start), raw(delta)],
        hold_log_until_deltas_sent=True,
    )
    store = FakeStore(replies={Op.SESSIONS_GET: {"type": "session", "id": "sesn_01SSS"}})
    async with client_for(store, feed=feed) as client, asyncio.timeout(5):
        response = await client.get("/v1/sessions/sesn_01SSS/events/stream?event_deltas%5B%5D=agent.message")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["request-id"].startswith("req_")
    frames = parse_frames(response.text)
    assert [f["event"] for f in frames] == [
        "user.message",
        "event_start",
        "event_delta",
        "agent.message",
        "session.deleted",
    ]
    assert json.loads(frames[0]["data"]) == USER_MESSAGE
    assert frames[0]["id"] == "sevt_01U"
    assert json.loads(frames[2]["data"]) == delta
    assert "id" not in frames[2]
    assert frames[3]["id"] == "sevt_01A"
    assert store.last(Op.SESSIONS_GET) == GetObject(workspace_id="wrkspc_01TEST", id="sesn_01SSS")
    assert sorted(feed.closed) == ["deltas", "log"]


async def test_without_event_deltas_no_delta_subscription_is_made() -> None:
    feed = FakeFeed(records=[raw(AGENT_MESSAGE), raw(DELETED)])
    store = FakeStore(replies={Op.SESSIONS_GET: {"type": "session", "id": "sesn_01SSS"}})
    async with client_for(store, feed=feed) as client, asyncio.timeout(5):
        response = await client.get("/v1/sessions/sesn_01SSS/events/stream")
    assert [f["event"] for f in parse_frames(response.text)] == ["agent.message", "session.deleted"]
    assert feed.opened == ["log"]


async def test_streaming_an_unknown_session_is_a_json_404_before_any_stream() -> None:
    feed = FakeFeed()
    store = FakeStore(replies={Op.SESSIONS_GET: not_found("session", "sesn_01NOPE")})
    async with client_for(store, feed=feed) as client:
        response = await client.get("/v1/sessions/sesn_01NOPE/events/stream")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert feed.opened == []


async def test_event_deltas_outside_message_and_thinking_are_a_400() -> None:
    feed = FakeFeed()
    async with client_for(FakeStore(), feed=feed) as client:
        response = await client.get("/v1/sessions/sesn_01SSS/events/stream?event_deltas[]=agent.tool_use")
        too_many = await client.get(
            "/v1/sessions/sesn_01SSS/events/stream?" + "&".join(["event_deltas[]=agent.message"] * 101)
        )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("event_deltas[]: 'agent.tool_use' is not one of")
    assert too_many.status_code == 400
    assert feed.opened == []


async def test_the_stream_inbox_hands_items_over_in_order_and_wakes_its_reader() -> None:
    inbox = StreamInbox()
    inbox.put_nowait(b"first")
    inbox.put_nowait(b"second")
    assert [await inbox.get(), await inbox.get()] == [b"first", b"second"]
    reader = asyncio.create_task(inbox.get())  # finds the inbox empty and waits
    asyncio.get_running_loop().call_soon(inbox.put_nowait, None)  # runs after the reader's first step
    assert await asyncio.wait_for(reader, 5) is None
    assert inbox.qsize() == 0


async def test_the_stream_inbox_keeps_the_order_while_its_read_part_is_cut_off() -> None:
    inbox, sent, read = StreamInbox(), 0, []
    for batch, take in ((200, 150), (50, 60), (300, 340), (10, 10)):
        for _ in range(batch):
            inbox.put_nowait(str(sent).encode())
            sent += 1
        read += [inbox.pop() for _ in range(take)]
        assert inbox.qsize() == sent - len(read)
    assert read == [str(n).encode() for n in range(sent)]
    assert inbox._items == []  # noqa: SLF001 (read to the end: nothing kept)
