"""Roles and revocation in the gateway: only ``admin`` keys reach the admin API; a key the live key
directory knows as suspended or revoked is refused at once, whatever the key cache holds; a key's
own rate limit replaces the defaults."""

from __future__ import annotations

import hashlib

import pytest
from gateway_fakes import API_KEY, WORKSPACE, FakeStore, client_for

from corral.contracts.api.admin import RateLimit
from corral.contracts.api.errors import ApiError
from corral.contracts.log import ApiKeyCreated, ApiKeyUpdated
from corral.contracts.rpc import Op, ResolvedKey
from corral.gateway.auth import KeyCache, key_sha256, require_admin, resolve
from corral.gateway.keydirectory import KeyDirectory
from corral.gateway.ratelimit import RateLimited, RateLimiter

KEY_ID = "apikey_01TEST"


def created(key: str = API_KEY, *, role: str = "user") -> ApiKeyCreated:
    return ApiKeyCreated.model_validate(
        {
            "workspace_id": WORKSPACE,
            "key_id": KEY_ID,
            "key_sha256": hashlib.sha256(key.encode()).hexdigest(),
            "name": "k",
            "created_at": "2026-01-01T00:00:00Z",
            "role": role,
        }
    )


def updated(status: str = "active", rate_limit: RateLimit | None = None) -> ApiKeyUpdated:
    return ApiKeyUpdated.model_validate(
        {
            "workspace_id": WORKSPACE,
            "key_id": KEY_ID,
            "name": "k",
            "status": status,
            "rate_limit": rate_limit.model_dump() if rate_limit else None,
            "updated_at": "2026-01-01T00:00:01Z",
        }
    )


async def test_a_key_without_the_admin_role_gets_a_403_saying_what_key_is_needed() -> None:
    store = FakeStore()
    async with client_for(store) as client:
        response = await client.get("/v1/organizations/workspaces")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["type"] == "permission_error"
    assert "role `admin`" in error["message"] and "admin key" in error["message"]
    assert Op.WORKSPACES_LIST not in store.ops()


async def test_an_admin_key_reaches_the_admin_api() -> None:
    store = FakeStore(replies={Op.WORKSPACES_LIST: {"data": [], "has_more": False}})
    store.keys[key_sha256(API_KEY)] = ResolvedKey(workspace_id=WORKSPACE, key_id=KEY_ID, role="admin")
    async with client_for(store) as client:
        response = await client.get("/v1/organizations/workspaces", params={"limit": 5})
    assert response.status_code == 200, response.text
    assert response.json() == {"data": [], "has_more": False, "first_id": None, "last_id": None}
    assert store.last(Op.WORKSPACES_LIST).limit == 5


def test_require_admin_refuses_user_keys_only() -> None:
    require_admin(ResolvedKey(workspace_id=WORKSPACE, key_id=KEY_ID, role="admin"))
    with pytest.raises(ApiError) as refused:
        require_admin(ResolvedKey(workspace_id=WORKSPACE, key_id=KEY_ID))
    assert refused.value.error_type == "permission_error"


@pytest.mark.parametrize(("status", "word"), [("archived", "revoked"), ("inactive", "suspended")])
async def test_a_revoked_key_is_refused_at_once_although_the_cache_holds_it(status: str, word: str) -> None:
    store, cache, directory = FakeStore(), KeyCache(ttl_s=3600), KeyDirectory()
    headers = {"x-api-key": API_KEY}
    assert (await resolve(headers, store=store, cache=cache, directory=directory)).key_id == KEY_ID
    directory.apply(created())
    directory.apply(updated(status))
    with pytest.raises(ApiError) as refused:
        await resolve(headers, store=store, cache=cache, directory=directory)
    assert refused.value.error_type == "authentication_error"
    assert word in refused.value.message
    # the cached positive answer was never consulted again, nor the store
    assert store.ops().count(Op.AUTH_RESOLVE) == 1


async def test_a_revocation_that_arrives_while_the_store_answers_still_wins() -> None:
    """The store resolved the key (cached), the directory has only the revocation's key id."""
    store, cache, directory = FakeStore(), KeyCache(ttl_s=3600), KeyDirectory()
    directory.apply(created("sk-another-key-with-this-id"))
    directory.apply(updated("archived"))
    with pytest.raises(ApiError) as refused:
        await resolve({"x-api-key": API_KEY}, store=store, cache=cache, directory=directory)
    assert "revoked" in refused.value.message


async def test_a_key_the_directory_knows_needs_no_store_and_carries_its_role_and_rate_limit() -> None:
    store, directory = FakeStore(), KeyDirectory()
    directory.apply(created(role="admin"))
    directory.apply(updated(rate_limit=RateLimit(requests_per_second=2, burst=3)))
    caller = await resolve({"x-api-key": API_KEY}, store=store, cache=KeyCache(ttl_s=30), directory=directory)
    assert caller.role == "admin" and caller.rate_limit == RateLimit(requests_per_second=2, burst=3)
    assert store.ops() == []


async def test_a_revoked_key_gets_a_401_through_the_app() -> None:
    store, directory = FakeStore(), KeyDirectory()
    async with client_for(store, directory=directory) as client:
        assert (await client.get("/v1/organizations/workspaces")).status_code == 403
        directory.apply(created())
        directory.apply(updated("archived"))
        response = await client.get("/v1/agents")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_a_keys_own_rate_limit_replaces_the_defaults_even_when_they_are_off() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=0, burst=0, clock=lambda: now[0])
    for _ in range(100):
        limiter.check("a")  # defaults off: no limit
    own = RateLimit(requests_per_second=1, burst=2)
    limiter.check("b", own)
    limiter.check("b", own)
    with pytest.raises(RateLimited):
        limiter.check("b", own)
    now[0] += 1.0
    limiter.check("b", own)  # refilled at the key's own rate
