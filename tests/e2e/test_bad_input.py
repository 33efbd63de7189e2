"""Bad input never reaches the log: each kind gets its status and an Anthropic error body."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import anthropic
import httpx
import pytest

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.rpc import CreateApiKey, Op, RpcReply
from corral.devstack.stack import Stack

pytestmark = pytest.mark.e2e


def assert_error(response: httpx.Response, status: int, error_type: str, *mentions: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"] == response.headers["request-id"]
    for word in mentions:
        assert word in body["error"]["message"], body["error"]["message"]
    assert "Traceback" not in response.text
    return body


@pytest.fixture
async def session_id(client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]) -> str:
    agent_id, env_id = agent_env
    return (await client.beta.sessions.create(agent=agent_id, environment_id=env_id)).id


async def event_count(http: httpx.AsyncClient, session_id: str) -> int:
    response = await http.get(f"/v1/sessions/{session_id}/events", params={"limit": 1000})
    assert response.status_code == 200
    return len(response.json()["data"])


def message(**extra: Any) -> dict[str, Any]:
    return {"events": [{"type": "user.message", "content": [{"type": "text", "text": "hi"}], **extra}]}


@pytest.mark.parametrize(
    ("body", "status", "error_type", "mentions"),
    [
        (message(bogus=1), 400, "invalid_request_error", ("bogus",)),
        ({"events": [{"type": "user.message", "content": "not a list"}]}, 400, "invalid_request_error", ("content",)),
        ({"events": [{"type": "user.message"}]}, 400, "invalid_request_error", ("content",)),
        ({"events": [{"type": "agent.message", "content": []}]}, 400, "invalid_request_error", ("agent.message",)),
        ({}, 400, "invalid_request_error", ("events",)),
    ],
    ids=["unknown-field", "wrong-type", "missing-field", "agent-event-from-client", "empty-body"],
)
async def test_an_invalid_event_is_refused_and_the_log_is_unchanged(
    http: httpx.AsyncClient,
    session_id: str,
    body: dict[str, Any],
    status: int,
    error_type: str,
    mentions: tuple[str, ...],
) -> None:
    before = await event_count(http, session_id)
    response = await http.post(f"/v1/sessions/{session_id}/events", json=body)
    assert_error(response, status, error_type, *mentions)
    assert await event_count(http, session_id) == before


async def test_malformed_json_is_a_400_and_the_log_is_unchanged(http: httpx.AsyncClient, session_id: str) -> None:
    before = await event_count(http, session_id)
    response = await http.post(
        f"/v1/sessions/{session_id}/events", content=b'{"events": [', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_request_error", "JSON")
    assert await event_count(http, session_id) == before


async def test_an_oversized_body_is_a_413_and_the_log_is_unchanged(http: httpx.AsyncClient, session_id: str) -> None:
    before = await event_count(http, session_id)
    huge = message()
    huge["events"][0]["content"][0]["text"] = "x" * (33 * 1024 * 1024)  # over the default 32 MiB cap
    response = await http.post(f"/v1/sessions/{session_id}/events", json=huge)
    assert_error(response, 413, "request_too_large")
    assert await event_count(http, session_id) == before


async def test_unknown_ids_are_404s(http: httpx.AsyncClient) -> None:
    for path in (
        "/v1/sessions/sesn_01NOSUCHSESSION0000000000",
        "/v1/agents/agent_01NOSUCH",
        "/v1/environments/env_01NOSUCH",
    ):
        assert_error(await http.get(path), 404, "not_found_error")
    assert_error(await http.post("/v1/sessions/sesn_01NOSUCH/events", json=message()), 404, "not_found_error")


async def test_an_unknown_field_on_create_names_the_field_and_creates_nothing(http: httpx.AsyncClient) -> None:
    before = len((await http.get("/v1/agents", params={"limit": 100, "include_archived": "true"})).json()["data"])
    response = await http.post("/v1/agents", json={"name": "x", "model": "m", "colour": "blue"})
    assert_error(response, 400, "invalid_request_error", "colour")
    response = await http.post("/v1/agents", json={"name": "x"})
    assert_error(response, 400, "invalid_request_error", "model")
    response = await http.post("/v1/agents", json={"name": 5, "model": "m"})
    assert_error(response, 400, "invalid_request_error", "name")
    after = len((await http.get("/v1/agents", params={"limit": 100, "include_archived": "true"})).json()["data"])
    assert after == before


async def test_a_bad_or_missing_api_key_is_a_401(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url) as anon:
        assert_error(await anon.get("/v1/agents"), 401, "authentication_error")
        assert_error(await anon.get("/v1/agents", headers={"x-api-key": "sk-nope"}), 401, "authentication_error")
        assert_error(
            await anon.get("/v1/agents", headers={"authorization": "Bearer sk-nope"}), 401, "authentication_error"
        )
    async with anthropic.AsyncAnthropic(base_url=stack.gateway_url, api_key="sk-wrong", max_retries=0) as sdk:
        with pytest.raises(anthropic.AuthenticationError):
            await sdk.beta.agents.list()


async def test_another_workspaces_objects_are_invisible(
    stack: Stack, bus: Bus, http: httpx.AsyncClient, session_id: str
) -> None:
    key = "sk-corral-test-" + secrets.token_urlsafe(16)
    request = CreateApiKey(workspace_id="wrkspc_other", key_sha256=hashlib.sha256(key.encode()).hexdigest(), name="t")
    reply = RpcReply.model_validate_json(
        await bus.request(subjects.store_rpc(Op.API_KEYS_CREATE), request.model_dump_json().encode())
    )
    assert reply.ok, reply.error
    session = (await http.get(f"/v1/sessions/{session_id}")).json()
    before = await event_count(http, session_id)
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers={"x-api-key": key}) as other:
        assert_error(await other.get(f"/v1/sessions/{session_id}"), 404, "not_found_error")
        assert_error(await other.get(f"/v1/sessions/{session_id}/events"), 404, "not_found_error")
        assert_error(await other.post(f"/v1/sessions/{session_id}/events", json=message()), 404, "not_found_error")
        assert_error(await other.get(f"/v1/sessions/{session_id}/events/stream"), 404, "not_found_error")
        assert_error(await other.get(f"/v1/agents/{session['agent']['id']}"), 404, "not_found_error")
        assert_error(await other.get(f"/v1/environments/{session['environment_id']}"), 404, "not_found_error")
        assert_error(await other.delete(f"/v1/sessions/{session_id}"), 404, "not_found_error")
        assert (await other.get("/v1/sessions")).json()["data"] == []
    assert await event_count(http, session_id) == before


async def test_a_conflict_tells_the_sdk_not_to_retry(http: httpx.AsyncClient) -> None:
    agent = (await http.post("/v1/agents", json={"name": "c", "model": "m"})).json()
    await http.post(f"/v1/agents/{agent['id']}", json={"system": "s"})
    response = await http.post(f"/v1/agents/{agent['id']}", json={"system": "t", "version": 1})
    assert_error(response, 409, response.json()["error"]["type"])
    assert response.headers["x-should-retry"] == "false"


async def test_empty_body_archive_is_accepted(http: httpx.AsyncClient) -> None:
    agent = (await http.post("/v1/agents", json={"name": "c", "model": "m"})).json()
    response = await http.post(
        f"/v1/agents/{agent['id']}/archive", content=b"", headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["archived_at"] is not None
