"""Bad input of every kind gets the Anthropic error envelope with the right status, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from gateway_fakes import FakeStore, agent, client_for

from corral.contracts.api.errors import ApiError, conflict, not_found
from corral.contracts.rpc import Op


def assert_envelope(response: httpx.Response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"] == response.headers["request-id"]
    assert body["request_id"].startswith("req_")
    message: str = body["error"]["message"]
    return message


async def test_unknown_field_is_a_400_naming_the_field() -> None:
    store = FakeStore()
    async with client_for(store) as client:
        response = await client.post("/v1/agents", json={"name": "a", "model": "m", "bogus": 1})
    message = assert_envelope(response, 400, "invalid_request_error")
    assert "bogus: Extra inputs are not permitted" in message
    assert Op.AGENTS_CREATE not in store.ops()


async def test_wrong_type_is_a_400_naming_the_field() -> None:
    async with client_for(FakeStore()) as client:
        response = await client.post("/v1/environments", json={"name": ["not", "a", "string"]})
    assert "name: Input should be a valid string" in assert_envelope(response, 400, "invalid_request_error")


async def test_missing_required_field_inside_a_union_names_the_client_path() -> None:
    async with client_for(FakeStore()) as client:
        response = await client.post("/v1/sessions/sesn_01ABC/events", json={"events": [{"type": "user.message"}]})
    assert assert_envelope(response, 400, "invalid_request_error") == "events.0.content: Field required"


async def test_missing_discriminator_is_reported_as_the_missing_type_field() -> None:
    async with client_for(FakeStore()) as client:
        response = await client.post("/v1/sessions/sesn_01ABC/events", json={"events": [{"content": []}]})
    assert assert_envelope(response, 400, "invalid_request_error") == "events.0.type: Field required"


async def test_malformed_json_is_a_400() -> None:
    async with client_for(FakeStore()) as client:
        response = await client.post(
            "/v1/agents", content=b'{"name": "a",', headers={"content-type": "application/json"}
        )
    assert assert_envelope(response, 400, "invalid_request_error").startswith("request body is not valid JSON: ")


async def test_a_json_body_that_is_not_an_object_is_a_400() -> None:
    async with client_for(FakeStore()) as client:
        response = await client.post("/v1/agents", json=[1, 2])
    assert "must be a JSON object" in assert_envelope(response, 400, "invalid_request_error")


async def test_declared_content_length_over_the_limit_is_a_413_before_anything_runs() -> None:
    store = FakeStore()
    async with client_for(store, max_body_bytes=100) as client:
        response = await client.post("/v1/agents", content=b"x" * 101, headers={"content-type": "application/json"})
    assert "100 bytes" in assert_envelope(response, 413, "request_too_large")
    assert store.calls == []  # not even the key lookup


async def test_chunked_body_over_the_limit_is_a_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 30

    store = FakeStore()
    async with client_for(store, max_body_bytes=100) as client:
        response = await client.post("/v1/agents", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_envelope(response, 413, "request_too_large")
    assert Op.AGENTS_CREATE not in store.ops()


async def test_chunked_body_under_the_limit_is_read_whole() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "a",'
        yield b' "model": "m"}'

    store = FakeStore(replies={Op.AGENTS_CREATE: agent()})
    async with client_for(store, max_body_bytes=100) as client:
        response = await client.post("/v1/agents", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert store.last(Op.AGENTS_CREATE).params == {"name": "a", "model": "m"}


async def test_path_id_with_the_wrong_prefix_is_a_404() -> None:
    store = FakeStore()
    async with client_for(store) as client:
        response = await client.get("/v1/sessions/xyz")
    assert "session 'xyz' was not found" in assert_envelope(response, 404, "not_found_error")
    assert response.json()["error"]["details"] == {"error_code": "session_not_found"}
    assert Op.SESSIONS_GET not in store.ops()


async def test_unknown_path_is_a_404_envelope() -> None:
    async with client_for(FakeStore()) as client:
        response = await client.get("/v1/nothing-here")
    assert "GET /v1/nothing-here" in assert_envelope(response, 404, "not_found_error")


async def test_wrong_method_is_a_405_envelope() -> None:
    async with client_for(FakeStore()) as client:
        response = await client.delete("/v1/agents")
    message = assert_envelope(response, 405, "invalid_request_error")
    assert message == "method DELETE is not allowed on /v1/agents (allowed: GET, POST)"
    assert response.headers["allow"] == "GET, POST"


async def test_a_store_error_keeps_its_status_message_and_code() -> None:
    store = FakeStore(replies={Op.ENVIRONMENTS_GET: not_found("environment", "env_01NOPE")})
    async with client_for(store) as client:
        response = await client.get("/v1/environments/env_01NOPE")
    assert "env_01NOPE" in assert_envelope(response, 404, "not_found_error")
    assert response.json()["error"]["details"] == {"error_code": "environment_not_found"}


async def test_conflict_tells_the_sdk_not_to_retry() -> None:
    store = FakeStore(replies={Op.AGENTS_UPDATE: conflict("version 3 is not the latest (4)")})
    async with client_for(store) as client:
        response = await client.post("/v1/agents/agent_01AAA", json={"version": 3, "name": "b"})
    assert assert_envelope(response, 409, "conflict_error") == "version 3 is not the latest (4)"
    assert response.headers["x-should-retry"] == "false"


async def test_other_errors_do_not_carry_the_retry_override() -> None:
    store = FakeStore(replies={Op.AGENTS_GET: ApiError("permission_error", "no")})
    async with client_for(store) as client:
        response = await client.get("/v1/agents/agent_01AAA")
    assert_envelope(response, 403, "permission_error")
    assert "x-should-retry" not in response.headers


async def test_unexpected_exception_is_a_500_envelope_without_the_traceback() -> None:
    store = FakeStore(replies={Op.AGENTS_GET: RuntimeError("secret internals at 0xdeadbeef")})
    async with client_for(store, raise_app_exceptions=False) as client:
        response = await client.get("/v1/agents/agent_01AAA")
    message = assert_envelope(response, 500, "api_error")
    assert message == f"internal error (request-id {response.headers['request-id']}); the server log has the details"
    assert "secret" not in response.text
    assert "Traceback" not in response.text


async def test_every_response_carries_a_fresh_request_id() -> None:
    store = FakeStore(replies={Op.AGENTS_GET: agent()})
    async with client_for(store) as client:
        first = await client.get("/v1/agents/agent_01AAA")
        second = await client.get("/v1/agents/agent_01AAA")
    assert first.status_code == second.status_code == 200
    assert first.headers["request-id"].startswith("req_")
    assert first.headers["request-id"] != second.headers["request-id"]
