"""``Idempotency-Key``: one key, one effect. A repeat with the same body replays the first response,
a repeat with another body is a 409, and concurrent repeats still create one object."""

from __future__ import annotations

import asyncio
import uuid

import anthropic
import httpx
import pytest

from tests.e2e.flows import all_events
from tests.e2e.test_bad_input import assert_error

pytestmark = pytest.mark.e2e


def key_header() -> dict[str, str]:
    return {"Idempotency-Key": f"test-{uuid.uuid4()}"}


async def sessions_of(client: anthropic.AsyncAnthropic, agent_id: str) -> list[str]:
    return [s.id async for s in client.beta.sessions.list(agent_id=agent_id)]


async def test_the_same_key_and_body_twice_creates_one_session_and_replays_the_response(
    client: anthropic.AsyncAnthropic, http: httpx.AsyncClient, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    headers = key_header()
    first = await client.beta.sessions.with_raw_response.create(
        agent=agent_id, environment_id=env_id, extra_headers=headers
    )
    second = await client.beta.sessions.with_raw_response.create(
        agent=agent_id, environment_id=env_id, extra_headers=headers
    )
    assert first.http_response.content == second.http_response.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await sessions_of(client, agent_id) == [(await first.parse()).id]

    # the same key with another body is refused, and creates nothing
    response = await http.post(
        "/v1/sessions", json={"agent": agent_id, "environment_id": env_id, "title": "other"}, headers=headers
    )
    body = assert_error(response, 409, "conflict_error", "Idempotency-Key", "different request")
    assert body["error"]["details"]["error_code"] == "idempotency_key_reused"
    assert response.headers["x-should-retry"] == "false"
    assert len(await sessions_of(client, agent_id)) == 1

    # the same key on another path is another request too
    other_path = await http.post("/v1/environments", json={"name": f"idem-{uuid.uuid4().hex[:8]}"}, headers=headers)
    assert_error(other_path, 409, "conflict_error", "Idempotency-Key")


async def test_concurrent_duplicates_create_one_agent(client: anthropic.AsyncAnthropic) -> None:
    headers = key_header()
    name = f"idem-{uuid.uuid4().hex[:8]}"

    async def create() -> bytes:
        raw = await client.beta.agents.with_raw_response.create(
            name=name, model="claude-sonnet-4-6", extra_headers=headers
        )
        return raw.http_response.content

    bodies = await asyncio.gather(*(create() for _ in range(8)))
    assert len(set(bodies)) == 1
    assert len([a async for a in client.beta.agents.list(limit=100) if a.name == name]) == 1


async def test_a_repeated_event_send_is_stored_once(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    headers = key_header()
    events = [{"type": "user.message", "content": [{"type": "text", "text": "once"}]}]
    first = await client.beta.sessions.events.send(session.id, events=events, extra_headers=headers)
    second = await client.beta.sessions.events.send(session.id, events=events, extra_headers=headers)
    assert first.data[0].id == second.data[0].id
    stored = [e.id for e in await all_events(client, session.id) if e.type == "user.message"]
    assert stored == [first.data[0].id]
