"""Postgres is only a projection: while it is down, sessions keep taking input and running turns;
when it is back, the projection catches up to exactly the log (reliability plan F9)."""

from __future__ import annotations

import hashlib
import secrets

import anthropic
import httpx
import pytest

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.health import Health
from corral.contracts.rpc import CreateApiKey, Op, RpcReply
from corral.devstack.stack import Stack
from tests.e2e.flows import run_turn
from tests.e2e.test_restart import fold_matches_projection
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


async def test_turns_run_while_postgres_is_down_and_the_projection_catches_up(
    stack: Stack, client: anthropic.AsyncAnthropic, http: httpx.AsyncClient, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    await run_turn(client, session.id, "before the outage")

    stack.component("postgres").stop()
    try:
        during = await run_turn(client, session.id, "during the outage")
        assert during[-1].type == "session.status_idle" and during[-1].stop_reason.type == "end_turn"
    finally:
        stack.start(timeout=120)

    expected = {"before the outage", "during the outage"}

    async def projected() -> bool:
        response = await http.get(f"/v1/sessions/{session.id}/events", params={"types[]": "user.message"})
        return response.status_code == 200 and {e["content"][0]["text"] for e in response.json()["data"]} == expected

    await eventually(projected, timeout=60, every=0.25)
    listed = [e async for e in client.beta.sessions.events.list(session.id)]
    assert [e.type for e in listed].count("agent.message") == 2
    assert (await client.beta.sessions.retrieve(session.id)).status == "idle"
    await fold_matches_projection(stack)


async def test_keys_the_gateway_has_not_cached_are_resolved_from_the_log_while_postgres_is_down(
    stack: Stack, bus: Bus, client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    key = "sk-corral-test-" + secrets.token_urlsafe(16)  # registered, never sent: not in any gateway cache
    request = CreateApiKey(workspace_id="wrkspc_outage", key_sha256=hashlib.sha256(key.encode()).hexdigest(), name="t")
    reply = RpcReply.model_validate_json(
        await bus.request(subjects.store_rpc(Op.API_KEYS_CREATE), request.model_dump_json().encode())
    )
    assert reply.ok, reply.error

    stack.component("postgres").stop()
    try:
        async with httpx.AsyncClient(base_url=stack.gateway_url, headers={"x-api-key": key}, timeout=30) as other:
            # Authenticated (not 401, not 529), and still another workspace's session: 404.
            response = await other.get(f"/v1/sessions/{session.id}")
            assert response.status_code == 404, response.text
            assert response.json()["error"]["type"] == "not_found_error"
        async with httpx.AsyncClient(base_url=stack.gateway_url, headers={"x-api-key": "sk-unknown"}) as stranger:
            response = await stranger.get(f"/v1/sessions/{session.id}")
            assert response.status_code == 401, response.text
            assert response.json()["error"]["type"] == "authentication_error"
    finally:
        stack.start(timeout=120)


async def test_an_agent_created_while_postgres_is_down_is_answered_and_stored_once(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    name = "outage-" + secrets.token_hex(4)
    stack.component("postgres").stop()
    try:
        created = await http.post("/v1/agents", json={"name": name, "model": "claude-sonnet-4-6"})
        # It is in the log: an error here would make a retrying client create it twice.
        assert created.status_code == 200, created.text
    finally:
        stack.start(timeout=120)
    agent_id = created.json()["id"]

    async def readable() -> bool:
        return (await http.get(f"/v1/agents/{agent_id}")).status_code == 200

    await eventually(readable, timeout=60, every=0.25)
    assert (await http.get(f"/v1/agents/{agent_id}")).json()["name"] == name
    listed = (await http.get("/v1/agents", params={"limit": 100})).json()["data"]
    assert [a["id"] for a in listed if a["name"] == name] == [agent_id]


async def _store_health(bus: Bus) -> Health:
    return Health.model_validate_json(await bus.request(subjects.health("session-store"), b"{}", timeout=10))


async def test_health_reports_postgres_down_with_the_reason_and_ok_again_once_it_is_back(
    stack: Stack, bus: Bus, http: httpx.AsyncClient
) -> None:
    before = await _store_health(bus)
    assert before.status == "ok", before
    assert before.dependencies == {"nats": "ok", "postgres": "ok"}
    assert before.details["lag_sessions"].isdigit() and before.details["lag_catalog"].isdigit()
    assert (await http.get("/health")).json()["dependencies"]["session-store"] == {"nats": "ok", "postgres": "ok"}

    stack.component("postgres").stop()
    try:
        during = await _store_health(bus)
        assert during.status == "degraded", during
        assert during.dependencies["postgres"].startswith("unreachable"), during
        public = await http.get("/health")
        assert public.status_code == 200, public.text  # degraded, still serving
        body = public.json()
        assert body["status"] == "degraded" and body["services"]["session-store"] == "degraded"
        assert body["dependencies"]["session-store"]["postgres"] == "failing"
        assert "unreachable" not in public.text  # the reason stays on the bus
    finally:
        stack.start(timeout=120)

    async def healthy() -> bool:  # the store's health, as a client would ask it
        return (await _store_health(bus)).status == "ok"

    await eventually(healthy, timeout=60, every=0.25)
    after = await _store_health(bus)
    assert after.dependencies["postgres"] == "ok" and after.details["projection"] == "ok"
