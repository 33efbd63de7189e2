"""The bus-backed store client: request subjects and bodies, replies, and an absent session-store."""

from __future__ import annotations

import json
from typing import Any, cast

import nats.errors
import pytest
from gateway_fakes import FakeStore, client_for

from corral.bus import Bus, NoResponders
from corral.contracts.api.errors import ApiError
from corral.contracts.rpc import GetObject, ListObjects, Op, StoreOps
from corral.gateway.errors import Unavailable
from corral.gateway.store import BusStore


class ScriptedBus:
    """A bus whose ``request`` answers from a script; ``call`` is the real ``Bus.call`` over it."""

    call = Bus.call

    def __init__(self, reply: bytes | BaseException) -> None:
        self.reply = reply
        self.requests: list[tuple[str, bytes, float | None]] = []

    async def request(self, subject: str, data: bytes, *, timeout: float | None = None, spill: bool = True) -> bytes:
        self.requests.append((subject, data, timeout))
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply


def store_over(bus: ScriptedBus) -> BusStore:
    return BusStore(cast(Bus, bus), timeout_s=2.5)


async def test_a_call_sends_the_request_json_to_the_operation_subject() -> None:
    bus = ScriptedBus(b'{"ok": true, "result": {"id": "agent_01A"}}')
    result = await store_over(bus).call(StoreOps.AGENTS_GET, GetObject(workspace_id="w", id="agent_01A"))
    assert result == {"id": "agent_01A"}
    ((subject, data, timeout),) = bus.requests
    assert subject == "corral.rpc.store.agents.get"
    assert json.loads(data) == {"workspace_id": "w", "id": "agent_01A", "version": None}
    assert timeout == 2.5


async def test_an_error_reply_is_raised_as_the_api_error_it_describes() -> None:
    reply = {"ok": False, "error": {"type": "conflict_error", "message": "busy", "details": {"error_code": "x"}}}
    with pytest.raises(ApiError) as raised:
        await store_over(ScriptedBus(json.dumps(reply).encode())).call(
            StoreOps.SESSIONS_GET, GetObject(workspace_id="w", id="s")
        )
    assert (raised.value.status, raised.value.message, raised.value.error_code) == (409, "busy", "x")


@pytest.mark.parametrize("failure", [NoResponders("corral.rpc.store.agents.get"), TimeoutError()])
async def test_an_absent_or_silent_session_store_is_a_503(failure: BaseException) -> None:
    with pytest.raises(Unavailable) as raised:
        await store_over(ScriptedBus(failure)).call(StoreOps.AGENTS_GET, GetObject(workspace_id="w", id="agent_01A"))
    assert raised.value.status == 503
    assert "session-store" in raised.value.message


@pytest.mark.parametrize("raw", [b"<html>", b'{"ok": true, "result": {"data": "not a list"}}'])
async def test_a_malformed_reply_is_an_api_error(raw: bytes) -> None:
    with pytest.raises(ApiError) as raised:
        await store_over(ScriptedBus(raw)).call(StoreOps.AGENTS_LIST, ListObjects(workspace_id="w"))
    assert raised.value.error_type == "api_error"
    assert "agents.list" in raised.value.message


async def test_an_unavailable_store_reaches_the_client_as_a_retryable_503() -> None:
    unavailable = Unavailable("overloaded_error", "the session-store is unavailable")
    store: Any = FakeStore(replies={Op.AGENTS_GET: unavailable})
    async with client_for(store) as client:
        response = await client.get("/v1/agents/agent_01AAA")
    assert response.status_code == 503
    assert response.json()["error"] == {"type": "overloaded_error", "message": "the session-store is unavailable"}
    assert "x-should-retry" not in response.headers


async def test_a_store_reply_saying_the_bus_did_not_answer_is_a_503_to_retry_with_the_same_key() -> None:
    """The session-store's own write timed out (a NATS failover): its ``bus_unanswered`` error reply
    reaches the client as a 503 with ``retry-after``, not a 529 or a 500."""
    reply = {
        "ok": False,
        "error": {
            "type": "overloaded_error",
            "message": "the session store got no answer ...; retry in a few seconds with the same Idempotency-Key",
            "details": {"error_code": "bus_unanswered"},
        },
    }
    store = BusStore(cast(Bus, ScriptedBus(json.dumps(reply).encode())), timeout_s=2.5)
    async with client_for(store) as client:
        response = await client.get("/v1/agents/agent_01AAA")
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2" and response.headers["x-should-retry"] == "true"
    assert response.json()["error"]["type"] == "overloaded_error"


async def test_a_store_that_does_not_answer_in_time_says_to_retry_with_the_same_key() -> None:
    with pytest.raises(Unavailable) as raised:
        await store_over(ScriptedBus(nats.errors.TimeoutError())).call(
            StoreOps.AGENTS_GET, GetObject(workspace_id="w", id="agent_01A")
        )
    assert raised.value.status == 503 and "same Idempotency-Key" in raised.value.message
