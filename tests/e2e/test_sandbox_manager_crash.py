"""A sandbox-manager SIGKILLed while a tool runs does not stall the turn: the harness notices the
manager's heartbeats stopped, sends the same call again once a manager is back, and the restarted
manager answers it from its record ("interrupted, outcome unknown") without running it twice, in the
session's own sandbox, adopted with its workspace.

Without the heartbeats the harness waited for the dead manager's reply for the whole execute timeout
(630 s for a ``bash`` call without ``timeout_ms``), since the restarted manager never saw the request.
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
from tests.e2e.flows import all_events, open_stream, script, send_text, unique
from tests.e2e.test_tool_loop_sandbox import new_session, text_of, use
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

SLOW = "echo start >> runs.txt && sleep 30 && echo done"
#: A liveness bound, far below the 630 s the harness waited before (heartbeat silence is 5 s).
ANSWERED_WITHIN_S = 20.0


def workspace_file(stack: Stack, short_id: str, path: str) -> str:
    client = docker.DockerClient(base_url=stack.docker_host)
    try:
        [container] = [c for c in client.containers.list() if c.id.startswith(short_id)]
        result = container.exec_run(["cat", f"/workspace/{path}"])
        return result.output.decode() if result.exit_code == 0 else ""
    finally:
        client.close()


async def test_a_sandbox_manager_killed_mid_tool_is_noticed_and_the_call_answered_once(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    name = unique("manager-crash")
    await script(
        model,
        name,
        use("bash", command="hostname"),
        use("bash", command=SLOW),
        use("bash", command="cat runs.txt"),
        [{"type": "text", "text": "Checked."}],
    )
    session_id = await new_session(client)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: run the slow one")
        short_id = ""
        async with asyncio.timeout(120):
            async for event in stream:
                if event.type == "agent.tool_result" and not short_id:
                    short_id = text_of(event).split()[-1]  # a container's hostname is its short id
                if event.type == "agent.tool_use" and event.input.get("command") == SLOW:
                    slow_id = event.id
                    break
        # the command is running once its first line is in the workspace

        async def started() -> bool:  # the container: nothing announces a line written
            return "start" in await asyncio.to_thread(workspace_file, stack, short_id, "runs.txt")

        await eventually(started, timeout=60, every=0.1)

        stack.kill("sandbox-manager", signal.SIGKILL)
        try:
            await asyncio.to_thread(stack.start_service, "sandbox-manager")
        finally:
            restarted = time.monotonic()

        answered_after: float | None = None
        async with asyncio.timeout(120):
            async for event in stream:
                if event.type == "agent.tool_result" and event.tool_use_id == slow_id:
                    answered_after = time.monotonic() - restarted
                if event.type == "session.status_idle":
                    break

    assert answered_after is not None
    assert answered_after < ANSWERED_WITHIN_S, f"the call was answered {answered_after:.1f} s after the restart"
    events = await all_events(client, session_id)
    uses = [e for e in events if e.type == "agent.tool_use"]
    results = [e for e in events if e.type == "agent.tool_result"]
    assert [r.tool_use_id for r in results] == [u.id for u in uses], "each call answered once, in order"
    slow = results[1]
    assert slow.is_error
    assert "outcome is unknown" in text_of(slow), text_of(slow)
    # the restarted manager adopted the session's sandbox (same workspace) and did not run the call again
    assert text_of(results[2]).split() == ["start"], text_of(results[2])
    assert events[-1].type == "session.status_idle"
    assert events[-1].stop_reason.type == "end_turn"
