"""A tool call made while no sandbox-manager runs (stopped, or restarting after a crash) waits for one
to come back instead of failing at once: the harness asks again with a growing pause, for up to
``CORRAL_HARNESS_SANDBOX_WAIT_S`` (30 s by default), and the call runs once a manager is back.

Before, every call made in that window (about 6-7 s for a restart on this machine) was answered at
once with "the sandbox-manager is not running", a needless error handed to the model. A manager that
stays away still ends in a tool error (saying the tool did not run and what to do) and the turn goes
on; an interrupt stops the wait.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from corral.devstack.stack import Stack
from tests.e2e.flows import log_text, open_stream, read_until_idle, script, send_text, unique
from tests.e2e.test_tool_loop_sandbox import new_session, text_of, use
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

MANAGER = "sandbox-manager"
#: The harness log line of a tool call (not the provisioning, which logs its own) waiting for a manager.
WAITING = "no sandbox-manager answers; the tool call waits"


@pytest.fixture
def manager_back(stack: Stack) -> Iterator[None]:
    """Whatever a test does to the sandbox-manager, the next test finds it running."""
    yield
    stack.start_service(MANAGER)


async def tool_use_then_waiting(stack: Stack, stream: Any, session_id: str) -> Any:
    """The turn's ``agent.tool_use``, once a harness logged that the call waits for a manager."""
    async with asyncio.timeout(60):
        async for event in stream:
            if event.type == "agent.tool_use":
                break

    async def waiting() -> bool:  # a harness's log: nothing else says the call is waiting
        return any(
            WAITING in line and session_id in line
            for name in stack.service_names()
            if name.startswith("harness")
            for line in log_text(stack.log_path(name)).splitlines()
        )

    await eventually(waiting, timeout=20, every=0.1)
    return event


async def test_a_tool_call_made_while_the_manager_restarts_runs_once_it_is_back(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, manager_back: None
) -> None:
    name = unique("manager-absent")
    await script(model, name, use("bash", command="echo ran-$((6*7))"), [{"type": "text", "text": "Done."}])
    session_id = await new_session(client)
    stack.kill(MANAGER, signal.SIGKILL)  # a crash: its host advertisement lingers until it expires
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: run it")
        call = await tool_use_then_waiting(stack, stream, session_id)
        await asyncio.to_thread(stack.start_service, MANAGER)
        rest = await read_until_idle(stream, timeout=60)

    [result] = [e for e in rest if e.type == "agent.tool_result"]
    assert result.tool_use_id == call.id
    assert not result.is_error, text_of(result)
    assert text_of(result).strip() == "ran-42"
    assert rest[-1].stop_reason.type == "end_turn"


async def test_a_manager_that_stays_away_ends_the_call_in_a_tool_error_and_the_turn_goes_on(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, manager_back: None
) -> None:
    name = unique("manager-away")
    await script(model, name, use("bash", command="echo never"), [{"type": "text", "text": "No sandbox."}])
    session_id = await new_session(client)
    await asyncio.to_thread(stack.stop_service, MANAGER)  # a clean stop: its advertisement is gone
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: run it")
        await tool_use_then_waiting(stack, stream, session_id)
        rest = await read_until_idle(stream, timeout=90)  # the 30 s wait, then the model's reply

    [result] = [e for e in rest if e.type == "agent.tool_result"]
    assert result.is_error
    assert "none came back within 30 s, so the tool did not run" in text_of(result), text_of(result)
    assert "Try the tool call again" in text_of(result)
    assert rest[-1].stop_reason.type == "end_turn"


async def test_an_interrupt_stops_the_wait_for_a_manager(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, manager_back: None
) -> None:
    name = unique("manager-wait-interrupted")
    await script(model, name, use("bash", command="echo never"), [{"type": "text", "text": "Stopped."}])
    session_id = await new_session(client)
    await asyncio.to_thread(stack.stop_service, MANAGER)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: run it")
        await tool_use_then_waiting(stack, stream, session_id)
        await client.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])
        rest = await read_until_idle(stream, timeout=15)  # well inside the 30 s wait

    [result] = [e for e in rest if e.type == "agent.tool_result"]
    assert result.is_error
    assert text_of(result) == "interrupted by the user"
    assert rest[-1].stop_reason.type == "end_turn"
