"""A NUL character (and other text Postgres cannot hold as is) in a user message, an agent's name, a
tool's output and the model's text is stored and returned faithfully, and the platform keeps working
for every workspace, before and after `make down && make up`."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.health import Health
from corral.contracts.rpc import CreateApiKey, Op, RpcReply
from corral.devstack.stack import Stack
from tests.e2e.conftest import start_stack
from tests.e2e.flows import all_events, run_turn, script, unique

pytestmark = pytest.mark.e2e

NUL_NAME = "agent\x00with a NUL"
NUL_ENV = "env\x00"


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    state = tmp_path_factory.mktemp("nul")
    stack = start_stack(state)
    try:
        yield stack, state
    finally:
        stack.stop()


def text_of(event: Any) -> str:
    return "".join(block.text for block in event.content or [] if block.type == "text")


async def other_workspace_key(stack: Stack) -> str:
    key = "sk-corral-test-" + secrets.token_urlsafe(16)
    request = CreateApiKey(workspace_id="wrkspc_nul", key_sha256=hashlib.sha256(key.encode()).hexdigest(), name="t")
    async with Bus.connect(stack.nats_settings(), name="tests") as bus:
        reply = RpcReply.model_validate_json(
            await bus.request(subjects.store_rpc(Op.API_KEYS_CREATE), request.model_dump_json().encode())
        )
    assert reply.ok, reply.error
    return key


async def projection_health(stack: Stack) -> Health:
    async with Bus.connect(stack.nats_settings(), name="tests") as bus:
        return Health.model_validate_json(await bus.request(subjects.health("session-store"), b"{}", timeout=5))


async def everything_works(stack: Stack, keys: list[str]) -> None:
    """In every workspace: list sessions, create one, and run a turn in it."""
    for key in keys:
        async with anthropic.AsyncAnthropic(base_url=stack.gateway_url, api_key=key, max_retries=0) as client:
            listed = [s async for s in client.beta.sessions.list(limit=100)]
            agent = await client.beta.agents.create(name="plain", model="claude-sonnet-4-6")
            env = await client.beta.environments.create(name=unique("plain"))
            session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
            events = await run_turn(client, session.id, "hello after a NUL")
            assert events[-1].type == "session.status_idle" and events[-1].stop_reason.type == "end_turn"
            assert session.id in {s.id async for s in client.beta.sessions.list(limit=100)}
            assert len(listed) < len([s async for s in client.beta.sessions.list(limit=100)])
    health = await projection_health(stack)
    assert health.status == "ok" and health.details["projection"] == "ok", health


async def test_nul_everywhere_is_kept_and_nothing_stops(own_stack: tuple[Stack, Path]) -> None:
    stack, state = own_stack
    keys = [stack.api_key, await other_workspace_key(stack)]
    name = unique("nul")
    async with (
        anthropic.AsyncAnthropic(base_url=stack.gateway_url, api_key=stack.api_key, max_retries=0) as client,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.embedded_model}", timeout=10) as model,
    ):
        await script(
            model,
            name,
            [{"type": "tool_use", "name": "bash", "input": {"command": "printf 'bin\\0ary\\0out'"}}],
            [{"type": "text", "text": "model\x00text"}],
        )
        agent = await client.beta.agents.create(
            name=NUL_NAME, model="claude-sonnet-4-6", system="sys\x00tem", tools=[{"type": "agent_toolset_20260401"}]
        )
        env = await client.beta.environments.create(name=NUL_ENV)
        session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id, title="t\x00itle")
        events = await run_turn(client, session.id, f"{name} hello\x00world")
        assert events[-1].type == "session.status_idle" and events[-1].stop_reason.type == "end_turn"
        before = [e.model_dump() for e in await all_events(client, session.id)]

        by_type = {e["type"]: e for e in before}
        assert by_type["user.message"]["content"][0]["text"] == f"{name} hello\x00world"
        assert by_type["agent.tool_result"]["content"][0]["text"] == "bin\x00ary\x00out"
        assert by_type["agent.message"]["content"][0]["text"] == "model\x00text"
        assert (await client.beta.agents.retrieve(agent.id)).name == NUL_NAME
        assert (await client.beta.agents.retrieve(agent.id)).system == "sys\x00tem"
        assert (await client.beta.environments.retrieve(env.id)).name == NUL_ENV
        assert (await client.beta.sessions.retrieve(session.id)).title == "t\x00itle"
        with pytest.raises(anthropic.ConflictError):  # names stay unique, NUL and all
            await client.beta.environments.create(name=NUL_ENV)
        await everything_works(stack, keys)

    took = stack.stop()
    assert [name for name, seconds in took.items() if seconds is None] == [], f"killed after SIGTERM: {took}"
    again = start_stack(state)  # the same state: `make down && make up`
    try:
        async with anthropic.AsyncAnthropic(base_url=again.gateway_url, api_key=again.api_key, max_retries=0) as client:
            assert [e.model_dump() for e in await all_events(client, session.id)] == before
            assert (await client.beta.agents.retrieve(agent.id)).name == NUL_NAME
            events = await run_turn(client, session.id, "and again\x00")
            assert events[-1].type == "session.status_idle"
        await everything_works(again, keys)
    finally:
        again.stop()
