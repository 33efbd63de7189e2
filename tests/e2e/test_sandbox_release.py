"""Archiving or deleting a session removes its sandbox container: the sandbox-manager reads the
archive mark or the tombstone from the session log through its own durable consumer and releases on
its own, so the archive or delete answers without waiting for it, and a manager that was down when
the session ended releases once it is back.

Before, the session-store asked the sandbox-manager over request-reply and held the request up to
5 s for the answer; a manager that missed the request (down, frozen) never released, and the
restarted manager adopted the ended session's container and kept it until its idle timeout.
"""

from __future__ import annotations

import asyncio
import signal
import time

import anthropic
import docker
import httpx
import pytest

from corral.devstack.stack import Stack
from tests.e2e.flows import run_turn, unique
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

#: A liveness bound: the container is removed this soon after the session ends (or the manager is back).
RELEASED_WITHIN_S = 20.0
#: The old path waited up to 5 s for a manager that does not answer; the log path waits for nobody.
ANSWERED_WITHIN_S = 4.0


def container_exists(stack: Stack, short_id: str) -> bool:
    client = docker.DockerClient(base_url=stack.docker_host)
    try:
        return any(c.id.startswith(short_id) for c in client.containers.list(all=True, sparse=True))
    finally:
        client.close()


async def gone(stack: Stack, short_id: str, *, within_s: float = RELEASED_WITHIN_S) -> float:
    """Wait until the container is removed; how long that took."""
    t0 = time.monotonic()

    async def removed() -> bool:  # the engine: nothing tells the test of a removal
        return not await asyncio.to_thread(container_exists, stack, short_id)

    await eventually(removed, timeout=within_s, every=0.2)
    return time.monotonic() - t0


async def session_with_sandbox(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, stack: Stack
) -> tuple[str, str]:
    """A session that ran one tool call in its sandbox: its id and the container's short id."""
    name = unique("release")
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
    return session.id, short_id


async def end(client: anthropic.AsyncAnthropic, session_id: str, action: str) -> None:
    if action == "archive":
        await client.beta.sessions.archive(session_id)
    else:
        await client.beta.sessions.delete(session_id)


@pytest.mark.parametrize("action", ["archive", "delete"])
async def test_ending_a_session_removes_its_sandbox(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, action: str
) -> None:
    session_id, short_id = await session_with_sandbox(client, model, stack)
    await end(client, session_id, action)
    await gone(stack, short_id)


async def test_ending_sessions_does_not_wait_for_the_sandbox_manager_and_it_releases_once_back(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    archived, archived_box = await session_with_sandbox(client, model, stack)
    deleted, deleted_box = await session_with_sandbox(client, model, stack)

    # Frozen first (its subscriptions stay, so a request to it waits), then killed: neither hears a thing.
    stack.kill("sandbox-manager", signal.SIGSTOP)
    try:
        for session_id, action in ((archived, "archive"), (deleted, "delete")):
            t0 = time.monotonic()
            await end(client, session_id, action)
            took = time.monotonic() - t0
            assert took < ANSWERED_WITHIN_S, f"{action} took {took:.1f} s with the sandbox-manager frozen"
    finally:
        stack.kill("sandbox-manager", signal.SIGKILL)
        await asyncio.to_thread(stack.start_service, "sandbox-manager")
    # the restarted manager adopts what its predecessor left, then releases what the log says ended
    await gone(stack, archived_box)
    await gone(stack, deleted_box)
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.sessions.retrieve(deleted)
    assert (await client.beta.sessions.retrieve(archived)).archived_at is not None
