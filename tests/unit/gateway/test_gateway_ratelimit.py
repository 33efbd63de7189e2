"""Per-key rate limits: a 429 with retry-after once a key's bucket is empty; other keys unaffected."""

from __future__ import annotations

import pytest
from gateway_fakes import FakeStore, client_for

from corral.contracts.rpc import Op
from corral.gateway.ratelimit import RateLimited, RateLimiter


def test_a_bucket_allows_its_burst_then_refills_at_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        limiter.check("k1")
    with pytest.raises(RateLimited) as err:
        limiter.check("k1")
    assert err.value.retry_after_s == pytest.approx(0.5)
    assert err.value.status == 429
    limiter.check("k2")  # another key has its own bucket
    now[0] = 0.5
    limiter.check("k1")
    with pytest.raises(RateLimited):
        limiter.check("k1")


def test_the_least_recently_used_keys_are_forgotten() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=2, clock=lambda: 0.0)
    limiter.check("a")
    limiter.check("b")
    limiter.check("c")  # forgets "a"
    limiter.check("a")  # a fresh bucket again


def store_with_agents() -> FakeStore:
    store = FakeStore()
    store.replies[Op.AGENTS_LIST] = {"data": [], "next_page": None}
    return store


async def test_a_key_over_its_limit_gets_a_429_the_sdk_can_retry() -> None:
    store = store_with_agents()
    async with client_for(store, rate_limit_rps=1.0, rate_limit_burst=2) as client:
        assert (await client.get("/v1/agents")).status_code == 200
        assert (await client.get("/v1/agents")).status_code == 200
        response = await client.get("/v1/agents")
    assert response.status_code == 429
    body = response.json()
    assert body["error"]["type"] == "rate_limit_error"
    assert int(response.headers["retry-after"]) >= 1
    assert int(response.headers["retry-after-ms"]) > 0
    assert store.ops().count(Op.AGENTS_LIST) == 2  # the limited request never reached the store


async def test_no_limit_is_applied_by_default() -> None:
    async with client_for(store_with_agents()) as client:
        statuses = {(await client.get("/v1/agents")).status_code for _ in range(300)}
    assert statuses == {200}
