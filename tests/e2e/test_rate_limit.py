"""Rate limits are on by default: a runaway client (one key, requests as fast as it can) gets a 429
with the Anthropic error body and ``retry-after``, while other keys are served as usual."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import httpx
import pytest

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.rpc import CreateApiKey, Op, RpcReply
from corral.devstack.stack import Stack
from tests.e2e.test_bad_input import assert_error

pytestmark = pytest.mark.e2e

WORKERS = 16
MAX_REQUESTS = 5000  # far more than the default burst (500) plus 30 s at the default rate (100/s)


async def new_key(bus: Bus) -> str:
    key = "sk-corral-test-" + secrets.token_urlsafe(16)
    request = CreateApiKey(workspace_id="wrkspc_ratelimit", key_sha256=hashlib.sha256(key.encode()).hexdigest())
    reply = RpcReply.model_validate_json(
        await bus.request(subjects.store_rpc(Op.API_KEYS_CREATE), request.model_dump_json().encode())
    )
    assert reply.ok, reply.error
    return key


async def test_a_runaway_client_is_throttled_with_the_default_limits(
    stack: Stack, bus: Bus, http: httpx.AsyncClient
) -> None:
    key = await new_key(bus)
    limited: list[httpx.Response] = []
    sent = 0
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers={"x-api-key": key}, timeout=30) as runaway:

        async def hammer() -> None:
            nonlocal sent
            while not limited and sent < MAX_REQUESTS:
                sent += 1
                response = await runaway.get("/v1/agents", params={"limit": 1})
                if response.status_code == 429:
                    limited.append(response)
                else:
                    assert response.status_code == 200, response.text

        async with asyncio.timeout(120):
            await asyncio.gather(*(hammer() for _ in range(WORKERS)))

    assert limited, f"{sent} requests from one key were all served"
    response = limited[0]
    body = assert_error(response, 429, "rate_limit_error", "rate limit")
    assert body["error"]["details"]["error_code"] == "rate_limited"
    assert int(response.headers["retry-after"]) >= 1
    assert int(response.headers["retry-after-ms"]) >= 1
    # another key is not affected by this one's bucket
    assert (await http.get("/v1/agents", params={"limit": 1})).status_code == 200
