"""In-memory stand-ins for the harness's ports: store, model, sandbox, deltas, lease bucket, wake source."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from corral.bus import Change, KeyChanged, KeyExists
from corral.contracts import rpc, sandbox
from corral.contracts.api.environments import Environment
from corral.contracts.api.events import HarnessEvent, ModelUsage
from corral.harness.events import wire
from corral.harness.lease import HeldLease
from corral.harness.model import ModelError, ModelReply, ModelRequest, TextSink, ToolRequest
from corral.harness.sandbox import SandboxError
from corral.harness.sessionlog import LogEntry
from corral.harness.store import LogMoved, StoreError, StoreRejected

SESSION_ID = "sesn_test"
ENVIRONMENT = Environment(
    id="env_test",
    name="test",
    config={"type": "cloud"},
    metadata={},
    created_at="2026-01-01T00:00:00Z",
    updated_at="2026-01-01T00:00:00Z",
)

_STATUS_AFTER = {
    "session.status_running": "running",
    "session.status_rescheduled": "rescheduling",
    "session.status_idle": "idle",
    "session.status_terminated": "terminated",
}


def agent_snapshot(
    *, model: str = "claude-test", system: str | None = "be brief", tools: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "type": "agent",
        "id": "agent_test",
        "version": 1,
        "model": {"id": model},
        "system": system,
        "tools": tools or [],
    }


def toolset(*, default: str = "always_allow", enabled: bool = True, **per_tool: dict[str, Any]) -> dict[str, Any]:
    """A resolved ``agent_toolset_20260401`` entry; ``per_tool`` overrides a tool's config fields."""
    names = ("bash", "edit", "read", "write", "glob", "grep", "web_fetch", "web_search")
    return {
        "type": "agent_toolset_20260401",
        "default_config": {"enabled": enabled, "permission_policy": {"type": default}},
        "configs": [
            {
                "name": name,
                "type": name,
                "enabled": enabled,
                "permission_policy": {"type": default},
                **per_tool.get(name, {}),
            }
            for name in names
        ],
    }


def custom_tool(name: str = "lookup") -> dict[str, Any]:
    return {
        "type": "custom",
        "name": name,
        "description": f"the client's {name}",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    }


def tool_use(
    id: str, name: str = "bash", input: dict[str, Any] | None = None, *, permission: str = "allow"
) -> dict[str, Any]:
    evaluation = {"allow": {"type": "always_allow"}, "ask": {"type": "always_ask"}}.get(permission)
    event = {
        "type": "agent.tool_use",
        "id": id,
        "name": name,
        "input": input if input is not None else {"command": "ls"},
        "evaluated_permission": permission,
    }
    if evaluation:
        event["evaluation"] = evaluation
    return event


def custom_use(id: str, name: str = "lookup", input: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "agent.custom_tool_use", "id": id, "name": name, "input": input or {"q": "x"}}


def tool_result(tool_use_id: str, value: str = "ok", *, is_error: bool = False) -> dict[str, Any]:
    return {
        "type": "agent.tool_result",
        "id": f"res-{tool_use_id}",
        "tool_use_id": tool_use_id,
        "content": text(value),
        "is_error": is_error,
    }


def confirm(tool_use_id: str, result: str = "allow", deny_message: str | None = None) -> dict[str, Any]:
    event = {
        "type": "user.tool_confirmation",
        "id": f"conf-{tool_use_id}",
        "tool_use_id": tool_use_id,
        "result": result,
    }
    if deny_message is not None:
        event["deny_message"] = deny_message
    return event


def custom_result(custom_tool_use_id: str, value: str = "42", *, is_error: bool = False) -> dict[str, Any]:
    return {
        "type": "user.custom_tool_result",
        "id": f"cres-{custom_tool_use_id}",
        "custom_tool_use_id": custom_tool_use_id,
        "content": text(value),
        "is_error": is_error,
    }


def requires_action(*ids: str) -> dict[str, Any]:
    return {
        "type": "session.status_idle",
        "id": "idle-ra",
        "stop_reason": {"type": "requires_action", "event_ids": list(ids)},
    }


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


def check_harness_append(status: str, events: Sequence[dict[str, Any]]) -> None:
    """Raise what the session-store raises for an append its status machine refuses."""
    for i, event in enumerate(events):
        kind = event["type"]
        if kind in _STATUS_FROM:
            if status not in _STATUS_FROM[kind]:
                raise LogMoved(f"conflict_error (wrong_status): events.{i}: {kind} while {status}")
            status = _STATUS_AFTER[kind]
        elif status != "running":
            raise LogMoved(f"conflict_error (wrong_status): events.{i}: {kind} only while running, not {status}")


class FakeStore:
    """A session log in memory. Appends are checked against the store's status machine, recorded
    call by call, and move the status like the store."""

    def __init__(
        self,
        *,
        status: str = "idle",
        agent: dict[str, Any] | None = None,
        environment: Environment | None = ENVIRONMENT,
    ) -> None:
        self.session: dict[str, Any] = {
            "type": "session",
            "id": SESSION_ID,
            "status": status,
            "agent": agent or agent_snapshot(),
            "environment_id": "env_test",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }
        self.environment = environment
        created = {"type": "corral.session_created", "workspace_id": "wrkspc_test", "session": dict(self.session)}
        self.log: list[rpc.LoggedEvent] = [rpc.LoggedEvent(seq=1, event=created)]
        self.appends: list[list[dict[str, Any]]] = []
        self.fences: list[int | None] = []
        """The log position each append was fenced on (``None``: not fenced)."""
        self.followed = 0
        """The last sequence a reader of ``follow`` took in (asked for the next record after)."""
        self._followed_moved = asyncio.Event()
        self.leases: list[rpc.Lease] = []
        self.log_reads = 0
        self.log_read = asyncio.Event()
        self.fail_append: StoreError | None = None
        self.fail_log: StoreError | None = None
        self.on_append: Callable[[list[dict[str, Any]]], None] | None = None
        self._grown = asyncio.Event()
        self.snapshots: dict[str, bytes] = {}

    @property
    def last_seq(self) -> int:
        return self.log[-1].seq if self.log else 0

    async def last_seq_of_log(self, session_id: str) -> int:
        self.log_reads += 1
        self.log_read.set()
        if self.fail_log is not None:
            raise self.fail_log
        return self.last_seq

    def add(self, *events: dict[str, Any]) -> None:
        for event in events:
            self.log.append(rpc.LoggedEvent(seq=self.last_seq + 1, event=event))
            if event["type"] in _STATUS_AFTER:
                self.session["status"] = _STATUS_AFTER[event["type"]]
        self._grown.set()
        self._grown = asyncio.Event()

    @property
    def events(self) -> list[rpc.LoggedEvent]:
        """The public events (the log without its creation record)."""
        return [e for e in self.log if e.event["type"] != "corral.session_created"]

    def send(self, *events: dict[str, Any]) -> None:
        """A client's append, checked like the session-store checks it: a confirmation only for an
        unanswered ``ask`` tool use, a custom result only for an unanswered custom tool use."""
        confirmable: set[str] = set()
        answerable: set[str] = set()
        for logged_event in self.events:
            event = logged_event.event
            if event["type"] == "agent.tool_use" and event.get("evaluated_permission") == "ask":
                confirmable.add(event["id"])
            elif event["type"] == "user.tool_confirmation":
                confirmable.discard(event["tool_use_id"])
            elif event["type"] == "agent.custom_tool_use":
                answerable.add(event["id"])
            elif event["type"] == "user.custom_tool_result":
                answerable.discard(event["custom_tool_use_id"])
        for event in events:
            if event["type"] == "user.tool_confirmation":
                if event["tool_use_id"] not in confirmable:
                    raise StoreRejected(f"invalid_request_error (tool_use_not_pending): {event['tool_use_id']}")
                confirmable.discard(event["tool_use_id"])
            elif event["type"] == "user.custom_tool_result":
                if event["custom_tool_use_id"] not in answerable:
                    raise StoreRejected(
                        f"invalid_request_error (custom_tool_use_not_pending): {event['custom_tool_use_id']}"
                    )
                answerable.discard(event["custom_tool_use_id"])
        self.add(*events)

    def types(self) -> list[str]:
        return [e.event["type"] for e in self.events]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e.event for e in self.events if e.event["type"] == kind]

    # --- the LogSource port: the log read straight from the stream ---------------------------------
    async def follow(self, session_id: str, after_seq: int) -> AsyncIterator[LogEntry]:
        assert session_id == SESSION_ID
        i = next((n for n, e in enumerate(self.log) if e.seq > after_seq), len(self.log))
        while True:
            grown = self._grown
            while i < len(self.log):
                entry = self.log[i]
                i += 1
                yield LogEntry(entry.seq, json.dumps(entry.event).encode())
                self.followed = max(self.followed, entry.seq)
                self._followed_moved.set()
                self._followed_moved = asyncio.Event()
            await grown.wait()

    async def followed_through(self, seq: int) -> None:
        """Wait until a reader of the log has taken in ``seq``."""
        while self.followed < seq:
            await self._followed_moved.wait()

    async def holds(self, session_id: str, seq: int) -> bool:
        return any(e.seq == seq for e in self.log)

    # --- the Environments port -----------------------------------------------------------------------
    async def get(self, environment_id: str) -> Environment | None:
        assert environment_id == "env_test"
        return self.environment

    # --- the Snapshots port -----------------------------------------------------------------------------
    async def load(self, session_id: str) -> bytes | None:
        return self.snapshots.get(session_id)

    async def save(self, session_id: str, data: bytes) -> None:
        self.snapshots[session_id] = data

    async def append(
        self,
        session_id: str,
        events: Sequence[HarnessEvent],
        *,
        lease: rpc.Lease,
        expected_last_seq: int | None = None,
    ) -> rpc.Appended:
        assert session_id == SESSION_ID
        if self.fail_append is not None:
            raise self.fail_append
        self.fences.append(expected_last_seq)
        if expected_last_seq is not None and expected_last_seq != self.last_seq:
            raise LogMoved(
                f"conflict_error (wrong_last_sequence): the log is at {self.last_seq}, not {expected_last_seq}"
            )
        batch = [wire(e) for e in events]  # serialised as BusStore sends them
        check_harness_append(self.session["status"], batch)
        self.appends.append(batch)
        self.leases.append(lease)
        stored = [{**e, "processed_at": "2026-01-01T00:00:00.000000Z"} for e in batch]
        self.add(*stored)
        if self.on_append is not None:
            self.on_append(batch)
        return rpc.Appended(events=stored, last_seq=self.last_seq)


@dataclass
class Reply:
    """A scripted model reply: its text chunks (one text block), optionally pausing after ``pause_after``
    chunks, then its tool calls (``(name, input)``, in order)."""

    chunks: list[str]
    usage: ModelUsage = field(default_factory=lambda: ModelUsage(input_tokens=12, output_tokens=7))
    pause_after: int | None = None
    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def calls(*tools: tuple[str, dict[str, Any]], say: str = "") -> Reply:
    """A reply that calls ``tools`` (after saying ``say``, if anything)."""
    return Reply([say] if say else [], tools=list(tools))


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
        tool_uses = tuple(ToolRequest(name, dict(tool_input)) for name, tool_input in step.tools)
        return ModelReply(
            texts=(full,) if full else (),
            usage=step.usage,
            stop_reason="tool_use" if tool_uses else "end_turn",
            tool_uses=tool_uses,
        )


Outcome = sandbox.ToolOutcome | SandboxError
Tool = Callable[[sandbox.Execute], str | Outcome]


def outcome(value: str, *, is_error: bool = False) -> sandbox.ToolOutcome:
    return sandbox.ToolOutcome(
        content=[sandbox.TextBlock(text=value)], is_error=is_error, executed=True, duration_ms=1.0
    )


class FakeSandbox:
    """The sandbox-manager's contract in memory: ``execute`` is keyed by ``(session_id, tool_use_id)``
    and a second call with the same key returns the recorded outcome with ``executed: false``.

    ``tool`` answers each call that runs (default: ``"<name> ok"``); ``block`` makes calls to that tool
    name wait until cancelled (``running`` is set while one waits); ``unavailable`` makes every call
    fail as if no sandbox-manager answered.
    """

    def __init__(self, tool: Tool | None = None, *, block: str | None = None) -> None:
        self.tool = tool or (lambda request: f"{request.name} ok")
        self.block = block
        self.executes: list[sandbox.Execute] = []
        self.runs: list[sandbox.Execute] = []
        self.records: dict[tuple[str, str], sandbox.ToolOutcome] = {}
        self.provisions: list[sandbox.Provision] = []
        self.cancels: list[sandbox.Cancel] = []
        self.timeouts: list[float] = []
        self.running = asyncio.Event()
        self.unavailable: SandboxError | None = None
        self.provision_gate: asyncio.Event | None = None

    async def provision(self, request: sandbox.Provision) -> sandbox.Provisioned:
        self.provisions.append(request)
        if self.unavailable is not None:
            raise self.unavailable
        if self.provision_gate is not None:
            await self.provision_gate.wait()
        return sandbox.Provisioned(container_id="c1", ready_ms=3.0, from_pool=True, network="none")

    async def execute(self, request: sandbox.Execute, *, timeout_s: float) -> sandbox.ToolOutcome:
        self.executes.append(request)
        self.timeouts.append(timeout_s)
        if self.unavailable is not None:
            raise self.unavailable
        key = (request.session_id, request.tool_use_id)
        if key in self.records:
            return self.records[key].model_copy(update={"executed": False})
        self.runs.append(request)
        if request.name == self.block:
            self.running.set()
            try:
                await asyncio.Event().wait()
            finally:
                self.running.clear()
        answer = self.tool(request)
        if isinstance(answer, SandboxError):
            raise answer
        result = outcome(answer) if isinstance(answer, str) else answer
        self.records[key] = result
        return result

    async def cancel(self, request: sandbox.Cancel) -> sandbox.Cancelled:
        self.cancels.append(request)
        return sandbox.Cancelled(cancelled=True)


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
    """KV compare-and-set semantics: one value and revision per key, and the change feed a watch sees."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[bytes, int]] = {}
        self.marks: dict[str, Change] = {}
        """The delete or expiry mark of each key with no value: its present state, as a watch starts."""
        self.revision = 0
        self.calls: list[tuple[str, str, int | None]] = []
        self.fail_update: Exception | None = None
        self.fail_writes: list[Exception] = []
        """Raised, one each, by the next ``create`` or ``update`` calls (a bucket that does not answer)."""
        self.watching = asyncio.Event()
        """Set when a watch of one key starts (a wake-up waiting for its session's lease)."""
        self.watching_all = asyncio.Event()
        """Set when a watch of every key starts (the takeover watch for expiries)."""
        self._watchers: list[tuple[str, asyncio.Queue[Change]]] = []
        self.drained = asyncio.Event()
        """Set while a watcher has taken every change so far and waits for the next."""
        self.watch_asked = asyncio.Event()
        """Set when a watch of one key is asked for (before it reads the key's present state)."""
        self.watch_gate: asyncio.Event | None = None
        """When set to an event, a watch of one key starts only once it is set (a slow watch start)."""
        self.create_gate: asyncio.Event | None = None
        """When set to an event, a ``create`` finds out whether the key is free only once it is set."""
        self.create_hints: list[int | None] = []
        """The ``gone_at`` of each ``create``, in order."""
        self.asked = asyncio.Event()
        """Set at each ``create`` and each watch of one key asked for (a worker reading the lease)."""

    def _publish(self, change: Change) -> None:
        for keys, queue in self._watchers:
            if keys in (">", change.key):
                queue.put_nowait(change)

    def _put(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.entries[key] = (value, self.revision)
        self.marks.pop(key, None)
        self._publish(Change(key, "put", value, self.revision))
        return self.revision

    async def create(self, key: str, value: bytes, *, gone_at: int | None = None) -> int:
        self.calls.append(("create", key, None))
        self.create_hints.append(gone_at)
        self.asked.set()
        if self.fail_writes:
            raise self.fail_writes.pop(0)
        if self.create_gate is not None:
            await self.create_gate.wait()
        if key in self.entries:
            raise KeyExists(key)
        return self._put(key, value)

    async def update(self, key: str, value: bytes, *, last: int) -> int:
        self.calls.append(("update", key, last))
        if self.fail_update is not None:
            raise self.fail_update
        if self.fail_writes:
            raise self.fail_writes.pop(0)
        if key not in self.entries or self.entries[key][1] != last:
            raise KeyChanged(key)
        return self._put(key, value)

    async def delete(self, key: str, *, last: int, note: bytes = b"") -> int:
        self.calls.append(("delete", key, last))
        if key not in self.entries or self.entries[key][1] != last:
            raise KeyChanged(key)
        self._mark(key, "delete", note)
        return self.revision

    def _mark(self, key: str, kind: Literal["delete", "expired"], note: bytes = b"") -> None:
        self.entries.pop(key, None)
        self.revision += 1
        self.marks[key] = Change(key, kind, note, self.revision)
        self._publish(self.marks[key])

    def release(self, key: str, *, released_through: int | None = None) -> None:
        """The key's holder lets it go (a delete, as a watch sees it); with ``released_through``, the
        delete names the log position it served up to, as a harness's does."""
        assert key in self.entries
        note = b""
        if released_through is not None:
            note = json.dumps({"holder": "someone-else", "released_through": released_through}).encode()
        self._mark(key, "delete", note)

    def expire(self, key: str) -> None:
        """The key's entry expires (its holder stopped renewing it): the bucket's expiry mark."""
        assert key in self.entries
        self._mark(key, "expired")

    def expire_tombstone(self, key: str) -> None:
        """The mark a deleted key's tombstone leaves when the bucket's TTL removes it."""
        assert key not in self.entries
        self._mark(key, "expired")

    async def changes(self, keys: str = ">", *, current: bool = True) -> AsyncIterator[Change]:
        if keys != ">":
            self.watch_asked.set()
            self.asked.set()
            if self.watch_gate is not None:
                await self.watch_gate.wait()
        queue: asyncio.Queue[Change] = asyncio.Queue()
        if current and keys == ">":
            for key, (value, revision) in self.entries.items():
                queue.put_nowait(Change(key, "put", value, revision))
        elif current:
            if keys in self.entries:
                value, revision = self.entries[keys]
                queue.put_nowait(Change(keys, "put", value, revision))
            elif keys in self.marks:
                queue.put_nowait(self.marks[keys])
        watcher = (keys, queue)
        self._watchers.append(watcher)
        self.calls.append(("watch", keys, None))
        (self.watching_all if keys == ">" else self.watching).set()
        try:
            while True:
                if queue.empty():
                    self.drained.set()
                change = await queue.get()
                self.drained.clear()
                yield change
        finally:
            self._watchers.remove(watcher)

    def steal(self, key: str) -> None:
        """Another worker takes the key (after our lease expired)."""
        self._put(key, b'{"holder":"someone-else"}')


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


class StoreLog:
    """``FakeStore``'s log as the driver reads it (the ``LogSource`` port)."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store

    async def last_seq(self, session_id: str) -> int:
        return await self.store.last_seq_of_log(session_id)

    def follow(self, session_id: str, after_seq: int) -> AsyncIterator[LogEntry]:
        return self.store.follow(session_id, after_seq)

    async def holds(self, session_id: str, seq: int) -> bool:
        return await self.store.holds(session_id, seq)
