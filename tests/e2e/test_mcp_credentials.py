"""An MCP server that requires a bearer, reached with a session's vault credential, through the SDK.

The test MCP server (``tests.mcp_server``, ``/secure/``) accepts only the tokens it is told are
valid; the ``mcp_oauth`` credential's first access token is valid, then expires mid-session (the
server stops accepting it). The credential-proxy, answered 401, refreshes the token at a real token
endpoint started by the test (``client_secret_basic``), writes the new tokens to OpenBao and the new
``expires_at`` to the catalog, and sends the call again: it succeeds. Every secret is a canary, and
none is found outside OpenBao afterwards (streams, Postgres, service logs, events).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx
import pytest

from corral.contracts.clock import parse_rfc3339
from corral.devstack.stack import Stack
from tests.e2e.flows import all_events, open_stream, read_until_idle, script, send_text, unique
from tests.e2e.sweep import CANARY_PREFIX, Canaries, sweep
from tests.e2e.test_vaults import later
from tests.mcp_server import RunningMcpServer
from tests.token_endpoint import Received, TokenServer

pytestmark = pytest.mark.e2e

ALLOW = {"permission_policy": {"type": "always_allow"}}


async def test_an_expired_mcp_oauth_token_is_refreshed_mid_session_and_the_call_succeeds(
    stack: Stack,
    client: anthropic.AsyncAnthropic,
    model: httpx.AsyncClient,
    mcp_server: RunningMcpServer,
    token_endpoint: TokenServer,
) -> None:
    canaries = Canaries()
    first, refresh, client_secret = canaries.new("access"), canaries.new("refresh"), canaries.new("client")
    mcp_server.valid_tokens.add(first)

    def issue(request: Received) -> tuple[int, str, bytes]:
        status, content_type, body = token_endpoint.grant(request)
        issued = json.loads(body)
        canaries.all += [issued["access_token"], issued["refresh_token"]]
        mcp_server.valid_tokens.add(issued["access_token"])
        return status, content_type, body

    token_endpoint.answer = issue
    before_requests = len(token_endpoint.received)

    vault = await client.beta.vaults.create(display_name="mcp oauth")
    credential = await client.beta.vaults.credentials.create(
        vault.id,
        auth={
            "type": "mcp_oauth",
            "mcp_server_url": mcp_server.secure_url,
            "access_token": first,
            "expires_at": later(hours=2),
            "refresh": {
                "refresh_token": refresh,
                "client_id": "corral-e2e",
                "token_endpoint": token_endpoint.url,
                "token_endpoint_auth": {"type": "client_secret_basic", "client_secret": client_secret},
            },
        },
    )
    agent = await client.beta.agents.create(
        name=unique("mcp-oauth"),
        model="claude-sonnet-4-6",
        mcp_servers=[{"type": "url", "name": "secure", "url": mcp_server.secure_url}],
        tools=[{"type": "mcp_toolset", "mcp_server_name": "secure", "default_config": ALLOW}],  # type: ignore[typeddict-item]
    )
    env = await client.beta.environments.create(name=unique("mcp-oauth-env"))
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id, vault_ids=[vault.id])

    name = unique("mcp-oauth")
    await script(
        model,
        name,
        [{"type": "tool_use", "name": "mcp__secure__add", "input": {"a": 1, "b": 2}}],
        [{"type": "text", "text": "Three."}],
        [{"type": "tool_use", "name": "mcp__secure__add", "input": {"a": 20, "b": 22}}],
        [{"type": "text", "text": "Forty-two."}],
    )
    stream = await open_stream(client, session.id)
    async with stream:
        await send_text(client, session.id, f"{name}: add 1 and 2")
        seen = await read_until_idle(stream)
        results = [e for e in seen if e.type == "agent.mcp_tool_result"]
        assert [(r.is_error, [b.text for b in r.content]) for r in results] == [(False, ["3"])], seen
        assert len(token_endpoint.received) == before_requests, "a live token is not refreshed"

        mcp_server.valid_tokens.discard(first)  # the access token expires mid-session
        await send_text(client, session.id, "now add 20 and 22")
        seen = await read_until_idle(stream)

    results = [e for e in seen if e.type == "agent.mcp_tool_result"]
    assert [(r.is_error, [b.text for b in r.content]) for r in results] == [(False, ["42"])], seen
    assert not [e for e in seen if e.type == "session.error"]

    [request] = token_endpoint.received[before_requests:]
    assert request.form["grant_type"] == "refresh_token" and request.form["refresh_token"] == refresh
    pair = f"corral-e2e:{client_secret}".encode()
    assert request.headers["authorization"] == "Basic " + base64.b64encode(pair).decode()
    new_access = token_endpoint.issued[-1]
    assert mcp_server.bearers[-1] == new_access and first in mcp_server.bearers

    # the new tokens are in OpenBao; the catalog has the new expires_at and no token
    headers = {"X-Vault-Token": stack.vault_token}
    async with httpx.AsyncClient(base_url=f"{stack.vault_addr}/v1/corral", headers=headers, timeout=10) as bao:
        path = f"data/workspaces/default/vaults/{vault.id}/credentials/{credential.id}"
        stored: dict[str, Any] = (await bao.get(path)).json()["data"]["data"]
    assert stored == {
        "access_token": new_access,
        "refresh_token": token_endpoint.refresh_tokens[-1],
        "client_secret": client_secret,
    }
    refreshed = await client.beta.vaults.credentials.retrieve(credential.id, vault_id=vault.id)
    assert refreshed.auth.type == "mcp_oauth" and refreshed.auth.expires_at is not None
    expires = refreshed.auth.expires_at
    expires = parse_rfc3339(expires) if isinstance(expires, str) else expires
    assert timedelta(minutes=55) < expires - datetime.now(UTC) <= timedelta(hours=1)

    # canary sweep: no secret outside OpenBao (and the token endpoint and MCP server the test runs)
    events = json.dumps([e.model_dump(mode="json") for e in await all_events(client, session.id)])
    assert CANARY_PREFIX not in events and CANARY_PREFIX not in refreshed.model_dump_json()
    assert await sweep(stack, canaries.all) == []


async def test_a_server_that_refuses_the_vaults_bearer_is_an_authentication_session_error(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, mcp_server: RunningMcpServer
) -> None:
    canaries = Canaries()
    wrong = canaries.new("wrong")  # never among the server's valid tokens
    vault = await client.beta.vaults.create(display_name="wrong bearer")
    await client.beta.vaults.credentials.create(
        vault.id, auth={"type": "static_bearer", "mcp_server_url": mcp_server.secure_url, "token": wrong}
    )
    agent = await client.beta.agents.create(
        name=unique("mcp-401"),
        model="claude-sonnet-4-6",
        mcp_servers=[{"type": "url", "name": "secure", "url": mcp_server.secure_url}],
        tools=[{"type": "mcp_toolset", "mcp_server_name": "secure", "default_config": ALLOW}],  # type: ignore[typeddict-item]
    )
    env = await client.beta.environments.create(name=unique("mcp-401-env"))
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id, vault_ids=[vault.id])
    name = unique("mcp-401")
    await script(model, name, [{"type": "text", "text": "No tools, then."}])
    stream = await open_stream(client, session.id)
    async with stream:
        await send_text(client, session.id, f"{name}: hello")
        seen = await read_until_idle(stream)

    errors = [e.error for e in seen if e.type == "session.error"]
    assert [(e.type, e.mcp_server_name) for e in errors] == [("mcp_authentication_failed_error", "secure")], errors
    assert "HTTP 401" in errors[0].message and "127.0.0.1" in errors[0].message
    assert wrong in mcp_server.bearers  # the vault's bearer was sent, and refused
    assert seen[-1].stop_reason.type == "end_turn"
    events = json.dumps([e.model_dump(mode="json") for e in await all_events(client, session.id)])
    assert CANARY_PREFIX not in events
    assert await sweep(stack, canaries.all) == []
