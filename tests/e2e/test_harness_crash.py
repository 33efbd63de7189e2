"""A harness SIGKILLed mid-turn loses nothing: the other harness finishes the turn, once."""

from __future__ import annotations

import asyncio
import signal

import anthropic
import httpx
import pytest

from corral.bus import Bus
from corral.devstack.stack import Stack
from corral.harness import crashpoints
from tests.e2e.flows import all_events, lease_holder, open_stream, read_until_idle, script, send_text, unique
from tests.e2e.test_tool_loop_sandbox import new_session, use
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

SLOW = {
    "scenarios": [
        {
            "name": "slow-reply",
            "match": "^crash-test-slow",
            "turns": [
                {
                    "content": [{"type": "text", "text": " ".join(f"word{i}" for i in range(40))}],
                    "chunk_delay_ms": 100,
                }
            ],
        }
    ]
}


async def test_killing_the_harness_mid_turn_hands_the_turn_to_the_other_one(
    stack: Stack, bus: Bus, model: httpx.AsyncClient, client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    assert (await model.post("/_corral/scripts", json=SLOW)).status_code == 200
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)

    stream = await open_stream(client, session.id, event_deltas=["agent.message"])
    async with stream:
        await send_text(client, session.id, "crash-test-slow: take your time")
        deltas = 0
        async with asyncio.timeout(20):
            async for event in stream:
                if event.type == "event_delta":
                    deltas += 1
                    if deltas == 3:
                        break
        holder = await lease_holder(bus, session.id)
        assert holder in ("harness-1", "harness-2")
        stack.kill(holder, signal.SIGKILL)
        try:
            rest = await read_until_idle(stream, timeout=60)
        finally:
            stack.start_service(holder)

    assert rest[-1].stop_reason.type == "end_turn"
    events = await all_events(client, session.id)
    types = [e.type for e in events]
    assert types.count("user.message") == 1
    assert types.count("agent.message") == 1, types
    assert types.count("session.status_idle") == 1
    assert "session.status_rescheduled" in types
    starts = [e.id for e in events if e.type == "span.model_request_start"]
    ends = [e.model_request_start_id for e in events if e.type == "span.model_request_end"]
    assert sorted(starts) == sorted(ends), "every model request start has exactly one end"
    message = next(e for e in events if e.type == "agent.message")
    assert message.content[0].text.startswith("word0 word1")
    final = await client.beta.sessions.retrieve(session.id)
    assert final.status == "idle"


@pytest.mark.parametrize("point", sorted(crashpoints.NAMES))
async def test_a_harness_that_dies_at_each_step_boundary_loses_and_repeats_nothing(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, point: str
) -> None:
    """``CORRAL_HARNESS_CRASHPOINT`` makes the only running harness exit (status 137, no clean-up) at
    one boundary of a tool turn; a harness started afterwards finishes the turn from the log: each
    tool call answered once, one reply, one idle, every model request start closed once."""
    name = unique(f"crashpoint-{point}")
    await script(model, name, use("bash", command="echo ran >> runs.txt"), [{"type": "text", "text": "Done."}])
    session_id = await new_session(client)
    stack.stop_service("harness-2")
    stack.service_env["harness-1"] = {"CORRAL_HARNESS_CRASHPOINT": point}
    try:
        stack.restart_service("harness-1")
        stream = await open_stream(client, session_id)
        async with stream:
            await send_text(client, session_id, f"{name}: go")

            async def exited() -> bool:  # another process
                return not stack.component("harness-1").is_running()

            await eventually(exited, timeout=60)
            logged = stack.log_path("harness-1").read_text(errors="replace").splitlines()
            assert any("crashpoint reached" in line and point in line for line in logged), "it did not exit there"
            del stack.service_env["harness-1"]
            stack.start_service("harness-1")
            rest = await read_until_idle(stream, timeout=60)
    finally:
        stack.service_env.pop("harness-1", None)
        stack.start_service("harness-1")
        stack.start_service("harness-2")

    assert rest[-1].stop_reason.type == "end_turn"
    events = await all_events(client, session_id)
    types = [e.type for e in events]
    assert types.count("agent.message") == 1 and types.count("session.status_idle") == 1, types
    uses = [e.id for e in events if e.type == "agent.tool_use"]
    results = [e.tool_use_id for e in events if e.type == "agent.tool_result"]
    assert len(uses) == 1 and results == uses, "the tool call was answered exactly once"
    starts = [e.id for e in events if e.type == "span.model_request_start"]
    ends = [e.model_request_start_id for e in events if e.type == "span.model_request_end"]
    assert sorted(starts) == sorted(ends), "every model request start has exactly one end"
