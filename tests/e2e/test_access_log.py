"""A secret a client puts in a query string is refused and never written to the gateway's log."""

from __future__ import annotations

import secrets

import httpx
import pytest

from corral.devstack.stack import Stack
from tests.e2e.flows import logged
from tests.e2e.test_bad_input import assert_error

pytestmark = pytest.mark.e2e


async def test_an_api_key_in_a_query_string_is_refused_and_not_logged(stack: Stack) -> None:
    secret = f"sk-corral-{secrets.token_hex(16)}"
    marker = secrets.token_hex(8)
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as http:
        response = await http.get("/v1/agents", params={"api_key": secret, "page": marker, "token": secret})
    assert_error(response, 401, "authentication_error", "x-api-key")

    text = await logged(stack.log_path("gateway"), marker)
    access = [line for line in text.splitlines() if marker in line]
    assert any("GET /v1/agents?" in line and "401" in line for line in access), access
    assert secret not in text
    assert all("api_key=[redacted]" in line and "token=[redacted]" in line for line in access), access
