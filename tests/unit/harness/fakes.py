"""In-memory stand-ins for the harness's ports: store, model, deltas, lease bucket, wake source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.bus import KeyChanged, KeyExists
from corral.contracts import rpc
from corral.contracts.api.events import ModelUsage
from corral.harness.events import EventDict
from corral.harness.lease import HeldLease
from corral.harness.model import ModelError, ModelReply, ModelRequest, TextSink
from corral.harness.store import StoreError, StoreRejected

SESSION_ID = "sesn_test"

_STATUS_AFTER = {
    "session.status_running": "running",
    "session.status_rescheduled": "rescheduling",
    "session.status_idle": "idle",
    "session.status_terminated": "terminated",
}


def agent_snapshot(*, model: str = "claude-test", system: str | None = "be brief") -> dict[str, Any]:
    return {"type": "agent", "id": "agent_test", "version": 1, "model": {"id": model}, "system": system}


def text(value: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": value}]


def logged(*events: dict[str, Any], first_seq: int = 1) -> list[rpc.LoggedEvent]:
    return [rpc.LoggedEvent(seq=first_seq + i, event=event) for i, event in enumerate(events)]


def user(value: str, id: str = "u") -> dict[str, Any]:
    return {"type": "user.message", "id": id, "content": text(value)}


def agent(value: str, id: str = "a") -> dict[str, Any]:
    return {"type": "agent.message", "id": id, "content": text(value)}


def start(id: str) -> dict[str, Any]:
    return {"type": "span.model_request_start", "id": id}


def end(start_id: str, *, is_error: bool = False) -> dict[str, Any]:
    return {
        "type": "span.model_request_end",
        "id": f"end-{start_id}",
        "model_request_start_id": start_id,
        "model_usage": {},
        "is_error": is_error,
    }


def idle(reason: str = "end_turn") -> dict[str, Any]:
    return {"type": "session.status_idle", "id": "idle", "stop_reason": {"type": reason}}


def running() -> dict[str, Any]:
    return {"type": "session.status_running", "id": "running"}


def interrupt() -> dict[str, Any]:
    return {"type": "user.interrupt", "id": "interrupt"}


#: The session-store's status machine for harness appends: which statuses each status event may follow.
_STATUS_FROM = {
    "session.status_running": {"idle", "rescheduling"},
    "session.status_rescheduled": {"running"},
    "session.status_idle": {"running", "rescheduling"},
}


def check_harness_append(status: str, events: Sequence[EventDict]) -> None:
    """Raise what the session-store raises for an append its status machine refuses."""
    for i, event in enumerate(events):
        kind = event["type"]
        if kind in _STATUS_FROM:
            if status not in _STATUS_FROM[kind]:
                raise StoreRejected(f"conflict_error (illegal): events.{i}: {kind} while {status}")
            status = _STATUS_AFTER[kind]
        elif status != "running":
            raise StoreRejected(f"conflict_error (illegal): events.{i}: {kind} only while running, not {status}")


class FakeStore:
    """A session log in memory. Appends are checked against the store's status machine, recorded
    call by call, and move the status like the store."""

    def __init__(self, *, status: str = "idle", agent: dict[str, Any] | None = None) -> None:
        self.session: dict[str, Any] = {"id": SESSION_ID, "status": status, "agent": agent or agent_snapshot()}
        self.log: list[rpc.LoggedEvent] = []
        self.appends: list[list[EventDict]] = []
        self.leases: list[rpc.Lease] = []
        self.context_reads = 0
        self.context_read = asyncio.Event()
        self.fail_append: StoreError | None = None
        self.fail_context: StoreError | None = None
        self.lag = 0
        """How many of the newest events ``context`` leaves out (a read that is behind the log)."""
        self.on_append: Callable[[list[EventDict]], None] | None = None

    @property
    def last_seq(self) -> int:
        return self.log[-1].seq if self.log else 0

    def add(self, *events: dict[str, Any]) -> None:
        for event in events:
            self.log.append(rpc.LoggedEvent(seq=self.last_seq + 1, event=event))
            if event["type"] in _STATUS_AFTER:
                self.session["status"] = _STATUS_AFTER[event["type"]]

    def types(self) -> list[str]:
        return [e.event["type"] for e in self.log]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e.event for e in self.log if e.event["type"] == kind]

    async def context(self, session_id: str) -> rpc.SessionContext:
        assert session_id == SESSION_ID
        self.context_reads += 1
        self.context_read.set()
        if self.fail_context is not None:
            raise self.fail_context
        visible = self.log[: len(self.log) - self.lag]
        return rpc.SessionContext(
            session=dict(self.session),
            workspace_id="wrkspc_test",
            last_seq=visible[-1].seq if visible else 0,
            events=list(visible),
        )

    async def append(self, session_id: str, events: Sequence[EventDict], *, lease: rpc.Lease) -> rpc.Appended:
        assert session_id == SESSION_ID
        if self.fail_append is not None:
            raise self.fail_append
        check_harness_append(self.session["status"], events)
        batch = [dict(e) for e in events]
        self.appends.append(batch)
        self.leases.append(lease)
        stored = [{**e, "processed_at": "2026-01-01T00:00:00.000000Z"} for e in batch]
        self.add(*stored)
        if self.on_append is not None:
            self.on_append(batch)
        return rpc.Appended(events=stored, last_seq=self.last_seq)


@dataclass
class Reply:
    """A scripted model reply: its text chunks (one text block), optionally pausing after ``pause_after`` chunks."""

    chunks: list[str]
    usage: ModelUsage = field(default_factory=lambda: ModelUsage(input_tokens=12, output_tokens=7))
    pause_after: int | None = None


class FakeModel:
    def __init__(self, *script: Reply | ModelError) -> None:
        self.script = list(script)
        self.requests: list[ModelRequest] = []
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()
        self.cancelled = False

    async def stream(self, request: ModelRequest, on_text: TextSink) -> ModelReply:
        self.requests.append(request)
        step = self.script.pop(0)
        if isinstance(step, ModelError):
            raise step
        try:
            for i, chunk in enumerate(step.chunks):
                if step.pause_after == i:
                    self.paused.set()
                    await self.resume.wait()
                await on_text(0, chunk)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        full = "".join(step.chunks)
        return ModelReply(texts=(full,) if full else (), usage=step.usage, stop_reason="end_turn")


class FakeDeltas:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def publish(self, session_id: str, frame: dict[str, Any]) -> None:
        assert session_id == SESSION_ID
        self.frames.append(frame)


class RecordingSleep:
    """Returns at once and remembers how long it was asked to wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


class SteppedSleep:
    """Each sleep waits until the test calls ``tick()``; ``waiting`` counts sleepers parked now."""

    def __init__(self) -> None:
        self._ticks: asyncio.Queue[None] = asyncio.Queue()
        self.calls = 0
        self.parked = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.calls += 1
        self.parked.set()
        await self._ticks.get()

    def tick(self) -> None:
        self.parked.clear()
        self._ticks.put_nowait(None)


def held_lease() -> HeldLease:
    return HeldLease(session_id=SESSION_ID, holder="worker-1", token="token-1", revision=1)


class FakeBucket:
    """KV compare-and-set semantics: one value and revision per key."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[bytes, int]] = {}
        self.revision = 0
        self.calls: list[tuple[str, str, int | None]] = []
        self.fail_update: Exception | None = None

    async def create(self, key: str, value: bytes) -> int:
        self.calls.append(("create", key, None))
        if key in self.entries:
            raise KeyExists(key)
        self.revision += 1
        self.entries[key] = (value, self.revision)
        return self.revision

    async def update(self, key: str, value: bytes, *, last: int) -> int:
        self.calls.append(("update", key, last))
        if self.fail_update is not None:
            raise self.fail_update
        if key not in self.entries or self.entries[key][1] != last:
            raise KeyChanged(key)
        self.revision += 1
        self.entries[key] = (value, self.revision)
        return self.revision

    async def delete(self, key: str, *, last: int) -> None:
        self.calls.append(("delete", key, last))
        if key not in self.entries or self.entries[key][1] != last:
            raise KeyChanged(key)
        del self.entries[key]

    def steal(self, key: str) -> None:
        """Another worker takes the key (after our lease expired)."""
        self.revision += 1
        self.entries[key] = (b'{"holder":"someone-else"}', self.revision)


@dataclass
class FakeDelivery:
    data: bytes
    seq: int = 1
    num_delivered: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    settled: list[tuple[str, float | None]] = field(default_factory=list)
    heartbeats: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def ack(self) -> None:
        self.settled.append(("ack", None))
        self.done.set()

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append(("nak", delay))
        self.done.set()

    async def term(self) -> None:
        self.settled.append(("term", None))
        self.done.set()

    async def in_progress(self) -> None:
        self.heartbeats += 1


def wake_delivery(session_id: str = SESSION_ID, *, seq: int = 1, num_delivered: int = 1) -> FakeDelivery:
    wake = rpc.Wake(session_id=session_id, seq=seq, reason="user.message")
    return FakeDelivery(data=wake.model_dump_json().encode(), seq=seq, num_delivered=num_delivered)


class FakeSource:
    """Hands out queued deliveries; ``fetch`` waits for one (or returns empty once ``closed``)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[FakeDelivery] = asyncio.Queue()
        self.fetches = 0

    async def fetch(self, batch: int = 1, *, timeout: float = 5.0) -> list[FakeDelivery]:
        self.fetches += 1
        try:
            async with asyncio.timeout(0.05):
                return [await self.queue.get()]
        except TimeoutError:
            return []


class FakeWakeFeed:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[rpc.Wake] = asyncio.Queue()
        self.watching = asyncio.Event()

    async def watch(self, session_id: str) -> AsyncIterator[rpc.Wake]:
        self.watching.set()
        while True:
            yield await self.queue.get()
