"""Archiving or deleting a session removes its sandbox container."""

from __future__ import annotations

import asyncio

import anthropic
import docker
import httpx
import pytest

from corral.devstack.stack import Stack
from tests.e2e.flows import run_turn

pytestmark = pytest.mark.e2e


def container_exists(stack: Stack, short_id: str) -> bool:
    client = docker.DockerClient(base_url=stack.docker_host)
    try:
        return any(c.id.startswith(short_id) for c in client.containers.list(all=True))
    finally:
        client.close()


@pytest.mark.parametrize("action", ["archive", "delete"])
async def test_ending_a_session_removes_its_sandbox(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, action: str
) -> None:
    name = f"release-{action}"
    turns = [
        {"content": [{"type": "tool_use", "name": "bash", "input": {"command": "hostname"}}]},
        {"content": [{"type": "text", "text": "done"}]},
    ]
    await model.post("/_corral/scripts", json={"scenarios": [{"name": name, "match": f"^{name}", "turns": turns}]})
    agent = await client.beta.agents.create(
        name="release", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    env = await client.beta.environments.create(name=f"release-{agent.id.lower()}")
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    events = await run_turn(client, session.id, f"{name}: who are you")
    [result] = [e for e in events if e.type == "agent.tool_result"]
    assert not result.is_error
    short_id = result.content[-1].text.split()[-1]  # a container's hostname is its short id
    assert await asyncio.to_thread(container_exists, stack, short_id)

    if action == "archive":
        await client.beta.sessions.archive(session.id)
    else:
        await client.beta.sessions.delete(session.id)
    assert not await asyncio.to_thread(container_exists, stack, short_id)
