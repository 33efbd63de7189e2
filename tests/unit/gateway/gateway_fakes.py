"""Fakes for the gateway's ports (store, feed, probe) and a client wired to an app that uses them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from corral.bus import StoredMessage
from corral.contracts.api.errors import ApiError
from corral.contracts.health import Health
from corral.contracts.operation import Operation
from corral.contracts.rpc import Message, Op, ResolvedKey
from corral.gateway.app import create_app
from corral.gateway.auth import key_sha256
from corral.gateway.fanout import RecordSink
from corral.gateway.keydirectory import KeyDirectory
from corral.gateway.settings import Settings
from corral.gateway.state import Backends

API_KEY = "sk-corral-test"
WORKSPACE = "wrkspc_01TEST"

Reply = Any | ApiError | Exception | Callable[[Message], Any]


@dataclass
class FakeStore:
    """Records every call; answers from ``replies[op]`` (a value, an exception to raise, or a function)."""

    replies: dict[str, Reply] = field(default_factory=dict)
    keys: dict[str, ResolvedKey] = field(default_factory=dict)
    calls: list[tuple[str, Message]] = field(default_factory=list)
    auth_failure: Exception | None = None

    def __post_init__(self) -> None:
        self.keys.setdefault(key_sha256(API_KEY), ResolvedKey(workspace_id=WORKSPACE, key_id="apikey_01TEST"))

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]

    def last(self, op: str) -> Any:
        matching = [request for called, request in self.calls if called == op]
        assert matching, f"{op} was never called (calls: {self.ops()})"
        return matching[-1]

    async def call(self, operation: Operation[Any, Any], request: Message) -> Any:
        op = operation.name
        self.calls.append((op, request))
        if op == Op.AUTH_RESOLVE:
            if self.auth_failure is not None:
                raise self.auth_failure
            found = self.keys.get(request.key_sha256)  # type: ignore[attr-defined]
            if found is None:
                raise ApiError("authentication_error", "unknown key")
            return found
        reply = self.replies.get(op)
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            reply = reply(request)
        return None if reply is None else operation.parse_reply(reply)


@dataclass
class FakeFeed:
    """Log records (put into the attached queue, as the gateway's follow does) and delta payloads to
    hand out, and what was opened and closed."""

    records: list[bytes] = field(default_factory=list)
    deltas: list[bytes] = field(default_factory=list)
    hold_log_until_deltas_sent: bool = False
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    deltas_sent: asyncio.Event = field(default_factory=asyncio.Event)
    attached: set[RecordSink] = field(default_factory=set)
    _writers: list[asyncio.Task[None]] = field(default_factory=list)

    async def attach_log(self, session_id: str, sink: RecordSink) -> int:
        self.opened.append("log")
        self.attached.add(sink)
        self._writers.append(asyncio.create_task(self._log(session_id, sink)))
        return 0

    def detach_log(self, session_id: str, sink: RecordSink) -> None:
        self.attached.discard(sink)
        self.closed.append("log")
        for writer in self._writers:
            writer.cancel()

    async def open_deltas(self, session_id: str) -> AsyncIterator[bytes]:
        self.opened.append("deltas")
        return self._deltas()

    async def _log(self, session_id: str, sink: RecordSink) -> None:
        for i, record in enumerate(self.records):
            if self.hold_log_until_deltas_sent and i == len(self.records) - 2:
                await self.deltas_sent.wait()
            sink.put_nowait(StoredMessage(f"corral.sessions.{session_id}", i + 1, record, {}, None))

    async def _deltas(self) -> AsyncIterator[bytes]:
        try:
            for payload in self.deltas:
                yield payload
            self.deltas_sent.set()
            await asyncio.Event().wait()
        finally:
            self.closed.append("deltas")


@dataclass
class FakeProbe:
    answers: dict[str, Health] = field(default_factory=dict)
    bus_connected: bool = True

    async def check(self, service: str, *, timeout_s: float) -> Health | None:
        return self.answers.get(service)


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"max_body_bytes": 4096, "sse_heartbeat_s": 15.0, **overrides}
    return Settings(**values)


def client_for(
    store: FakeStore,
    *,
    feed: FakeFeed | None = None,
    probe: FakeProbe | None = None,
    api_key: str | None = API_KEY,
    raise_app_exceptions: bool = True,
    directory: KeyDirectory | None = None,
    **setting_overrides: Any,
) -> httpx.AsyncClient:
    app = create_app(
        settings(**setting_overrides),
        backends=Backends(store=store, feed=feed or FakeFeed(), probe=probe or FakeProbe(), directory=directory),
    )
    headers = {"x-api-key": api_key} if api_key else {}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test", headers=headers)


def agent(agent_id: str = "agent_01AAA", **fields: Any) -> dict[str, Any]:
    return {
        "type": "agent",
        "id": agent_id,
        "version": 1,
        "name": "a",
        "model": {"id": "claude-sonnet-4-6", "effort": None, "speed": "standard", "inference_geo": None},
        "tools": [],
        "mcp_servers": [],
        "skills": [],
        "execution_identity": {"type": "service_account"},
        "metadata": {},
        "archived_at": None,
        "created_at": "2026-01-01T00:00:00.000000Z",
        "updated_at": "2026-01-01T00:00:00.000000Z",
        **fields,
    }
