"""API keys: either header works, unknown and missing keys are 401s, answers are cached."""

from __future__ import annotations

import httpx
import pytest
from gateway_fakes import API_KEY, WORKSPACE, FakeStore, agent, client_for

from corral.contracts.api.errors import ApiError
from corral.contracts.rpc import Op, ResolvedKey
from corral.gateway.auth import KeyCache, api_key_from, key_sha256, resolve


def assert_unauthenticated(response: httpx.Response) -> str:
    assert response.status_code == 401
    body = response.json()
    assert body["error"]["type"] == "authentication_error"
    assert body["request_id"] == response.headers["request-id"]
    message: str = body["error"]["message"]
    assert "x-api-key" in message and "Authorization: Bearer" in message
    return message


async def test_missing_api_key_is_a_401_saying_how_to_authenticate() -> None:
    store = FakeStore()
    async with client_for(store, api_key=None) as client:
        response = await client.get("/v1/agents")
    assert assert_unauthenticated(response).startswith("missing API key")
    assert store.calls == []


async def test_unknown_api_key_is_a_401() -> None:
    store = FakeStore()
    async with client_for(store, api_key="sk-wrong") as client:
        response = await client.get("/v1/agents")
    assert assert_unauthenticated(response).startswith("invalid x-api-key")
    assert Op.AGENTS_LIST not in store.ops()


async def test_bearer_token_is_accepted_like_the_sdk_sends_it() -> None:
    store = FakeStore(replies={Op.AGENTS_GET: agent()})
    async with client_for(store, api_key=None) as client:
        response = await client.get("/v1/agents/agent_01AAA", headers={"authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200
    assert store.last(Op.AGENTS_GET).workspace_id == WORKSPACE


async def test_only_the_key_hash_reaches_the_store() -> None:
    store = FakeStore(replies={Op.AGENTS_GET: agent()})
    async with client_for(store) as client:
        await client.get("/v1/agents/agent_01AAA")
    lookup = store.last(Op.AUTH_RESOLVE)
    assert lookup.key_sha256 == key_sha256(API_KEY)
    assert API_KEY not in lookup.model_dump_json()


async def test_sdk_headers_and_unknown_query_parameters_are_ignored() -> None:
    store = FakeStore(replies={Op.AGENTS_GET: agent()})
    headers = {
        "anthropic-version": "2026-10-21",
        "anthropic-beta": "files-api-2025-04-14,managed-agents-2026-04-01",
        "anthropic-workspace-id": WORKSPACE,
        "x-stainless-timeout": "NOT_GIVEN",
        "x-stainless-retry-count": "0",
    }
    async with client_for(store) as client:
        response = await client.get("/v1/agents/agent_01AAA?beta=true", headers=headers)
    assert response.status_code == 200
    assert store.last(Op.AGENTS_GET).workspace_id == WORKSPACE


async def test_a_request_naming_another_workspace_than_the_keys_is_refused() -> None:
    store = FakeStore(replies={Op.AGENTS_GET: agent()})
    async with client_for(store) as client:
        response = await client.get("/v1/agents/agent_01AAA", headers={"anthropic-workspace-id": "wrkspc_other"})
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["type"] == "permission_error"
    assert "wrkspc_other" in error["message"] and WORKSPACE in error["message"]
    assert Op.AGENTS_GET not in store.ops()


async def test_resolved_keys_are_cached_between_requests() -> None:
    store = FakeStore(replies={Op.AGENTS_GET: agent()})
    async with client_for(store) as client:
        for _ in range(3):
            assert (await client.get("/v1/agents/agent_01AAA")).status_code == 200
    assert store.ops().count(Op.AUTH_RESOLVE) == 1


async def test_unknown_keys_are_cached_briefly_and_then_asked_again() -> None:
    now = [0.0]
    cache = KeyCache(ttl_s=30, negative_ttl_s=5, clock=lambda: now[0])
    store = FakeStore()
    for _ in range(2):
        with pytest.raises(ApiError):
            await resolve({"x-api-key": "sk-nope"}, store=store, cache=cache)
    assert store.ops().count(Op.AUTH_RESOLVE) == 1
    now[0] = 5.0
    with pytest.raises(ApiError):
        await resolve({"x-api-key": "sk-nope"}, store=store, cache=cache)
    assert store.ops().count(Op.AUTH_RESOLVE) == 2


async def test_a_known_key_is_asked_again_after_the_ttl() -> None:
    now = [0.0]
    cache = KeyCache(ttl_s=30, clock=lambda: now[0])
    store = FakeStore()
    await resolve({"x-api-key": API_KEY}, store=store, cache=cache)
    now[0] = 29.0
    await resolve({"x-api-key": API_KEY}, store=store, cache=cache)
    now[0] = 30.0
    resolved = await resolve({"x-api-key": API_KEY}, store=store, cache=cache)
    assert resolved.workspace_id == WORKSPACE
    assert store.ops().count(Op.AUTH_RESOLVE) == 2


def test_the_key_cache_forgets_the_least_recently_used_key_when_full() -> None:
    cache = KeyCache(ttl_s=30, max_entries=2, clock=lambda: 0.0)
    resolved = ResolvedKey(workspace_id=WORKSPACE, key_id="apikey_1")
    cache.remember("a", resolved)
    cache.remember("b", resolved)
    assert cache.lookup("a") == (True, resolved)  # "a" is now the most recent
    cache.remember("c", resolved)
    assert cache.lookup("b") == (False, None)
    assert cache.lookup("a") == (True, resolved)


async def test_a_store_outage_during_auth_is_not_cached_as_an_unknown_key() -> None:
    store = FakeStore(auth_failure=ApiError("overloaded_error", "session-store unavailable"))
    cache = KeyCache(ttl_s=30)
    with pytest.raises(ApiError) as raised:
        await resolve({"x-api-key": API_KEY}, store=store, cache=cache)
    assert raised.value.error_type == "overloaded_error"
    store.auth_failure = None
    assert (await resolve({"x-api-key": API_KEY}, store=store, cache=cache)).workspace_id == WORKSPACE


def test_x_api_key_wins_over_a_bearer_token_and_other_schemes_are_ignored() -> None:
    assert api_key_from({"x-api-key": "k1", "authorization": "Bearer k2"}) == "k1"
    assert api_key_from({"authorization": "Bearer  k2 "}) == "k2"
    assert api_key_from({"authorization": "Basic abc"}) is None
    assert api_key_from({"authorization": "Bearer "}) is None
