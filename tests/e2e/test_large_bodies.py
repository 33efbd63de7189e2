"""Every body the gateway accepts can be stored: one larger than the bus carries is a 413 before any
work, and a string that is not valid Unicode is a 400; never a 500, and the session's log is unchanged."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.e2e.flows import all_events, run_turn
from tests.e2e.test_bad_input import assert_error

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


@pytest.fixture
async def session_id(client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]) -> str:
    agent_id, env_id = agent_env
    return (await client.beta.sessions.create(agent=agent_id, environment_id=env_id)).id


@pytest.mark.parametrize("size", [MIB + MIB // 2, 4 * MIB], ids=["1.5MiB", "4MiB"])
async def test_a_user_message_too_large_to_store_is_a_413_and_the_session_still_works(
    client: anthropic.AsyncAnthropic, session_id: str, size: int
) -> None:
    before = [e.id for e in await all_events(client, session_id)]
    with pytest.raises(anthropic.APIStatusError) as raised:
        await client.beta.sessions.events.send(
            session_id, events=[{"type": "user.message", "content": [{"type": "text", "text": "x" * size}]}]
        )
    response = raised.value.response
    body = assert_error(response, 413, "request_too_large", "limit of", "bytes")
    assert "request-id" in response.headers and body["request_id"].startswith("req_")
    assert [e.id for e in await all_events(client, session_id)] == before
    events = await run_turn(client, session_id, "still here?")
    assert events[-1].type == "session.status_idle"


async def test_an_agent_with_a_system_prompt_too_large_to_store_is_a_413(
    client: anthropic.AsyncAnthropic, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        "/v1/agents", json={"name": "huge", "model": "claude-sonnet-4-6", "system": "s" * 3_500_000}
    )
    assert_error(response, 413, "request_too_large", "limit of")
    listed = [a async for a in client.beta.agents.list(limit=100) if a.name == "huge"]
    assert listed == []


async def test_the_largest_accepted_body_is_stored(
    client: anthropic.AsyncAnthropic, session_id: str, http: httpx.AsyncClient
) -> None:
    """The limit the 413 names is one the bus can really carry: a message just under it is stored."""
    probe = await http.post(f"/v1/sessions/{session_id}/events", content=b"x" * (5 * MIB))
    limit = int(probe.json()["error"]["message"].split("limit of ")[1].split(" ")[0])
    envelope = len('{"events":[{"type":"user.message","content":[{"type":"text","text":""}]}]}')
    text = "y" * (limit - envelope)
    sent = await client.beta.sessions.events.send(
        session_id, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
    )
    stored = [e for e in await all_events(client, session_id) if e.id == sent.data[0].id]
    assert stored and stored[0].content[0].text == text


@pytest.mark.parametrize("escape", ["\\ud800", "\\udc00", "a\\ud800b\\udc00"], ids=["high", "low", "reversed"])
async def test_a_lone_surrogate_is_a_400_and_the_log_is_unchanged(
    http: httpx.AsyncClient, session_id: str, escape: str
) -> None:
    before = len((await http.get(f"/v1/sessions/{session_id}/events")).json()["data"])
    raw = '{"events":[{"type":"user.message","content":[{"type":"text","text":"ESCAPE"}]}]}'.replace("ESCAPE", escape)
    response = await http.post(
        f"/v1/sessions/{session_id}/events", content=raw.encode(), headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_request_error", "events.0.content.0.text", "surrogate")
    assert len((await http.get(f"/v1/sessions/{session_id}/events")).json()["data"]) == before
    created = await http.post("/v1/agents", content=b'{"name":"\\udfff","model":"claude-sonnet-4-6"}')
    assert_error(created, 400, "invalid_request_error", "name", "surrogate")
