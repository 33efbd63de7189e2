"""Sessions longer than the model's context window: the harness compacts, and any harness rebuilds the
compacted conversation from the log alone.

The embedded model stands in for a small context window: it refuses requests over ``LIMIT`` tokens
with the real API's "prompt is too long" error and answers ``count_tokens`` with the same estimate.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
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
    run_turn,
    send_text,
    unique,
)

pytestmark = pytest.mark.e2e

LIMIT = 4_000
"""Tokens the embedded model takes in one request (it counts characters of text / 4)."""
SUMMARISED = "This session's earlier conversation was summarised"


@pytest.fixture
async def small_window(model: httpx.AsyncClient) -> AsyncIterator[None]:
    assert (await model.put("/_corral/limits", json={"max_input_tokens": LIMIT})).status_code == 200
    try:
        yield
    finally:
        await model.put("/_corral/limits", json={"max_input_tokens": None})


async def scenario(model: httpx.AsyncClient, name: str, *, chunk_delay_ms: int = 0) -> None:
    """Every turn of a conversation that mentions ``name`` anywhere in its first user message (a summary
    quotes it) gets a short text reply."""
    words = "Noted, I have read this part of the story and kept it in mind."
    turn = {"content": [{"type": "text", "text": words}], "chunk_delay_ms": chunk_delay_ms}
    document = {"scenarios": [{"name": name, "match": name, "turns": [turn] * 60}]}
    assert (await model.post("/_corral/scripts", json=document)).status_code == 200


def message(name: str, turn: int, chars: int) -> str:
    filler = " ".join(f"word{turn}-{i}" for i in range(chars // 10))
    return f"{name} turn {turn}: {filler[: chars - 2 * len(name) - 20]} ({name})"


async def agent_session(client: anthropic.AsyncAnthropic, env_id: str) -> str:
    agent = await client.beta.agents.create(name="long", model="claude-sonnet-4-6", system="Be brief.")
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env_id)
    return session.id


def first_text(request: dict[str, Any]) -> str:
    return str(request["messages"][0]["content"][0]["text"])


def compactions(events: list[Any]) -> list[Any]:
    return [e for e in events if e.type == "agent.thread_context_compacted"]


async def test_a_session_ten_times_the_context_window_completes_every_turn(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, agent_env: tuple[str, str], small_window: None
) -> None:
    name = unique("ctx-long")
    await scenario(model, name)
    session_id = await agent_session(client, agent_env[1])
    turns = 32  # 32 x 5000 characters = 40_000 tokens of user text alone: ten times LIMIT

    for turn in range(turns):
        seen = await run_turn(client, session_id, message(name, turn, 5_000))
        assert seen[-1].stop_reason.type == "end_turn", f"turn {turn}: {[e.type for e in seen]} ({session_id})"
        assert any(e.type == "agent.message" for e in seen), f"turn {turn} got no reply ({session_id})"

    events = await all_events(client, session_id)
    types = [e.type for e in events]
    assert types.count("agent.message") == turns
    assert not [e for e in events if e.type == "session.error"], f"no turn failed ({session_id})"
    found = compactions(events)
    assert len(found) >= 3, f"the log shows the compactions ({session_id})"
    details = found[-1].model_dump()["corral_compaction"]
    assert details["summary"].startswith("Summary (quoted by the embedded model)")
    assert any(e.id == details["summarized_through"] for e in events)
    answered = await requests_of(model, name)
    assert len(answered) >= turns
    assert first_text(answered[-1]).startswith(SUMMARISED), "the last request starts with the summary"


async def test_a_harness_killed_right_after_a_compaction_is_resumed_with_the_same_request(
    stack: Stack,
    bus: Bus,
    client: anthropic.AsyncAnthropic,
    model: httpx.AsyncClient,
    agent_env: tuple[str, str],
    small_window: None,
) -> None:
    name = unique("ctx-crash")
    await scenario(model, name, chunk_delay_ms=150)
    session_id = await agent_session(client, agent_env[1])
    for turn in range(2):  # 2 x 1500 tokens: fits; the third message does not
        await run_turn(client, session_id, message(name, turn, 6_000))
    assert not compactions(await all_events(client, session_id))

    stream = await open_stream(client, session_id, event_deltas=["agent.message"])
    async with stream:
        await send_text(client, session_id, message(name, 2, 6_000))
        compacted = False
        async with asyncio.timeout(60):
            async for event in stream:
                compacted = compacted or event.type == "agent.thread_context_compacted"
                if compacted and event.type == "event_delta":
                    break  # the request built after the compaction is being answered
        holder = await lease_holder(bus, session_id)
        stack.kill(holder, signal.SIGKILL)
        try:
            rest = await read_until_idle(stream, timeout=60)
        finally:
            stack.start_service(holder)

    assert rest[-1].stop_reason.type == "end_turn"
    events = await all_events(client, session_id)
    types = [e.type for e in events]
    assert "session.status_rescheduled" in types
    assert types.count("agent.message") == 3, types
    assert len(compactions(events)) == 1, "the harness that took over rebuilt the compaction, it did not redo it"
    killed, resumed = (await requests_of(model, name))[-2:]
    assert first_text(killed).startswith(SUMMARISED), "the killed harness had sent the compacted request"
    for field in ("model", "system", "tools", "messages", "max_tokens"):
        assert resumed.get(field) == killed.get(field), f"{field} differs after the takeover ({session_id})"
