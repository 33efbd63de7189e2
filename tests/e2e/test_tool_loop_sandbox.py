"""The whole tool loop against real sandboxes: the embedded model scripted to write a Python file, run
it, read it, edit it and run it again, through the official SDK, with the sandbox-manager running the
tools in hardened Docker containers.

The session's e2e stack runs a Docker engine and the sandbox image (see conftest). Nothing is
skipped: without ``dockerd`` or root, the stack fails with the launcher's message.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import Any

import anthropic
import httpx
import pytest

from corral.bus import Bus
from corral.devstack.stack import Stack
from tests.e2e.flows import (
    all_events,
    lease_holder,
    open_stream,
    read_until_idle,
    requests_of,
    running_in_a_sandbox,
    script,
    send_text,
    unique,
)

pytestmark = pytest.mark.e2e


def use(name: str, **tool_input: Any) -> list[dict[str, Any]]:
    return [{"type": "tool_use", "name": name, "input": tool_input}]


async def new_session(client: anthropic.AsyncAnthropic) -> str:
    agent = await client.beta.agents.create(
        name="e2e sandbox", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    env = await client.beta.environments.create(name=unique("e2e-sandbox"))
    return (await client.beta.sessions.create(agent=agent.id, environment_id=env.id)).id


def text_of(event: Any) -> str:
    return "\n".join(block.text for block in event.content or [] if block.type == "text")


async def test_write_run_read_edit_run_in_a_real_sandbox(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    name = unique("sandbox-loop")
    await script(
        model,
        name,
        [{"type": "text", "text": "Writing the script."}, *use("write", file_path="hello.py", content="print('hi')\n")],
        use("bash", command="python3 hello.py"),
        use("read", file_path="hello.py"),
        use("edit", file_path="hello.py", old_string="hi", new_string="hello"),
        use("bash", command="python3 hello.py"),
        [{"type": "text", "text": "It prints hello now."}],
    )
    session_id = await new_session(client)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: write and run a script")
        streamed = await read_until_idle(stream, timeout=180)

    assert streamed[-1].stop_reason.type == "end_turn"
    events = await all_events(client, session_id)
    assert [e.id for e in events] == [e.id for e in streamed]
    uses = [e for e in events if e.type == "agent.tool_use"]
    results = [e for e in events if e.type == "agent.tool_result"]
    assert [u.name for u in uses] == ["write", "bash", "read", "edit", "bash"]
    assert all(u.evaluated_permission == "allow" for u in uses)
    # each use is answered once, right after the request that made it, in order
    assert [r.tool_use_id for r in results] == [u.id for u in uses]
    ids = [e.id for e in events]
    for u, r in zip(uses, results, strict=True):
        assert ids.index(r.id) > ids.index(u.id)
    assert not any(r.is_error for r in results), [text_of(r) for r in results]
    assert "hi" in text_of(results[1]).split()
    assert "print('hi')" in text_of(results[2])
    assert "hello" in text_of(results[4]).split()
    # the model received each result in the exact Messages form, keyed by the tool use event id
    bodies = await requests_of(model, name)
    assert len(bodies) == 6
    for body, u, r in zip(bodies[1:], uses, results, strict=True):
        assert body["messages"][-2]["content"][-1] == {"type": "tool_use", "id": u.id, "name": u.name, "input": u.input}
        assert body["messages"][-1]["content"] == [
            {"type": "tool_result", "tool_use_id": u.id, "content": [b.model_dump() for b in r.content]}
        ]


async def test_parallel_calls_all_run_and_go_back_in_one_user_turn(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    name = unique("sandbox-parallel")
    await script(
        model,
        name,
        [*use("bash", command="echo one > a.txt && echo one"), *use("bash", command="cat a.txt; echo two")],
        [{"type": "text", "text": "Both ran."}],
    )
    session_id = await new_session(client)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: run two commands")
        streamed = await read_until_idle(stream, timeout=120)

    uses = [e for e in streamed if e.type == "agent.tool_use"]
    results = [e for e in streamed if e.type == "agent.tool_result"]
    assert [r.tool_use_id for r in results] == [u.id for u in uses]
    assert text_of(results[1]).split()[:2] == ["one", "two"]  # in order, in one persistent workspace
    [_, second] = await requests_of(model, name)
    assert [b["tool_use_id"] for b in second["messages"][-1]["content"]] == [u.id for u in uses]


async def test_an_interrupt_during_a_long_bash_ends_the_turn_within_seconds(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    name = unique("sandbox-interrupt")
    long = f"30.{uuid.uuid4().int % 10**6:06d}"  # a sleep no other test's command matches
    await script(
        model,
        name,
        [*use("bash", command=f"sleep {long}"), *use("bash", command="echo never")],
        [{"type": "text", "text": "Stopped."}],
    )
    session_id = await new_session(client)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: take your time")
        seen: list[Any] = []
        async with asyncio.timeout(120):
            async for event in stream:
                seen.append(event)
                if event.type == "agent.tool_use":
                    break
        await running_in_a_sandbox(stack, f"sleep {long}")
        interrupted_at = time.monotonic()
        await client.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])
        rest = await read_until_idle(stream, timeout=30)
        took = time.monotonic() - interrupted_at

    assert rest[-1].stop_reason.type == "end_turn"
    assert took < 5, f"the turn took {took:.1f} s to end after the interrupt"
    results = [e for e in rest if e.type == "agent.tool_result"]
    assert [text_of(r) for r in results] == ["interrupted by the user", "not run: the turn was interrupted"]
    assert all(r.is_error for r in results)

    # the session stays usable
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, "carry on")
        after = await read_until_idle(stream, timeout=60)
    assert after[-1].stop_reason.type == "end_turn"


async def test_a_harness_killed_while_a_tool_runs_is_replaced_and_the_tool_ran_once(
    stack: Stack, bus: Bus, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    name = unique("sandbox-crash")
    pause = f"4.{uuid.uuid4().int % 10**6:06d}"  # a sleep no other test's command matches
    await script(
        model,
        name,
        use("bash", command=f"echo x >> runs.txt && sleep {pause} && echo finished"),
        use("bash", command="cat runs.txt"),
        [{"type": "text", "text": "Ran once."}],
    )
    session_id = await new_session(client)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: append a line")
        async with asyncio.timeout(120):
            async for event in stream:
                if event.type == "agent.tool_use":
                    break
        holder = await lease_holder(bus, session_id)
        await running_in_a_sandbox(stack, f"sleep {pause}")
        stack.kill(holder, signal.SIGKILL)
        try:
            rest = await read_until_idle(stream, timeout=90)
        finally:
            stack.start_service(holder)

    assert rest[-1].stop_reason.type == "end_turn"
    events = await all_events(client, session_id)
    types = [e.type for e in events]
    assert "session.status_rescheduled" in types
    uses = [e for e in events if e.type == "agent.tool_use"]
    results = [e for e in events if e.type == "agent.tool_result"]
    assert [r.tool_use_id for r in results] == [u.id for u in uses]  # each call answered once
    assert text_of(results[0]).split()[-1:] == ["finished"]
    assert text_of(results[1]).split() == ["x"], "the interrupted harness's call ran exactly once"
