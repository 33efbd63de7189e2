"""Sessions of any length: the harness reads the log from JetStream incrementally, resumes from a
snapshot, and takes input sent right after ``session.status_idle`` without a lease hand-off."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import anthropic
import httpx
import pytest

from corral.bus import Bus
from corral.devstack.stack import Stack
from tests.e2e.flows import (
    all_events,
    lease_holder,
    log_text,
    open_stream,
    read_until_idle,
    run_turn,
    send_text,
    unique,
)

pytestmark = pytest.mark.e2e

HARNESSES = ("harness-1", "harness-2")


def harness_lines(stack: Stack, session_id: str, message: str) -> list[dict[str, object]]:
    """The harnesses' JSON log lines about ``session_id`` whose message is ``message``."""
    found: list[dict[str, object]] = []
    for name in HARNESSES:
        for line in log_text(stack.log_path(name)).splitlines():
            if session_id not in line or message not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("message") == message or record.get("msg") == message:
                found.append(record)
    return found


async def test_a_session_whose_log_passes_the_bus_payload_limit_keeps_answering(
    bus: Bus, client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    big = " ".join(["lorem"] * 50_000)  # 300 KB of text per message
    sent = 0
    for n in range(5):
        events = await run_turn(client, session.id, f"big message {n}: {big}")
        sent += len(big)
        assert events[-1].stop_reason.type == "end_turn", f"turn {n} did not end with end_turn"
        assert [e.type for e in events].count("agent.message") == 1, f"turn {n} has no answer"
    assert sent > bus.max_payload, "the log must pass the bus's max_payload for this test to mean anything"


def _slow_after(name: str, quick_turns: int) -> dict[str, object]:
    quick = {"content": [{"type": "text", "text": "ok"}]}
    slow = {"content": [{"type": "text", "text": " ".join(f"word{i}" for i in range(40))}], "chunk_delay_ms": 100}
    return {"scenarios": [{"name": name, "match": f"^{name}", "turns": [quick] * quick_turns + [slow]}]}


async def test_a_harness_killed_mid_turn_in_a_long_session_resumes_from_the_snapshot(
    stack: Stack, bus: Bus, model: httpx.AsyncClient, client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    name = unique("long-crash")
    quick_turns = 20  # about 6 events a turn: past the stack's snapshot interval (40 events) several times
    assert (await model.post("/_corral/scripts", json=_slow_after(name, quick_turns))).status_code == 200
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    for n in range(quick_turns):
        events = await run_turn(client, session.id, f"{name} turn {n}")
        assert events[-1].stop_reason.type == "end_turn"
    assert harness_lines(stack, session.id, "snapshot written"), "the lease holders wrote no snapshot"
    # A harness keeps the folds of the sessions it let go, and would take this one over from its own
    # kept fold rather than the snapshot: restarted, neither harness has one.
    for name in HARNESSES:
        stack.restart_service(name)

    stream = await open_stream(client, session.id, event_deltas=["agent.message"])
    async with stream:
        await send_text(client, session.id, "now take your time")
        deltas = 0
        async with asyncio.timeout(20):
            async for event in stream:
                if event.type == "event_delta":
                    deltas += 1
                    if deltas == 3:
                        break
        holder = await lease_holder(bus, session.id)
        survivor = next(h for h in HARNESSES if h != holder)
        before_kill = len(_resumed_in(stack, survivor, session.id))
        stack.kill(holder, signal.SIGKILL)
        try:
            rest = await read_until_idle(stream, timeout=60)
        finally:
            stack.start_service(holder)

    assert rest[-1].stop_reason.type == "end_turn"
    types = [e.type for e in await all_events(client, session.id)]
    assert "session.status_rescheduled" in types
    assert types.count("agent.message") == quick_turns + 1
    # The takeover is the survivor's first run of the session after the kill (the dead holder's
    # wake-up, redelivered once the turn is over, may start another, from the fold the takeover kept).
    resumed = _resumed_in(stack, survivor, session.id)[before_kill:]
    assert resumed, f"{survivor} never resumed the session"
    took_over = resumed[0]
    assert took_over.get("source") == "snapshot", (
        f"the takeover folded the log from {took_over.get('source')}, not a snapshot"
    )
    assert isinstance(took_over.get("events"), int) and took_over["events"] >= 40


def _resumed_in(stack: Stack, harness: str, session_id: str) -> list[dict[str, object]]:
    """The ``resumed the session's fold`` lines ``harness`` logged about ``session_id``, in order."""
    mine = _lines_of(stack.log_path(harness))
    return [line for line in harness_lines(stack, session_id, "resumed the session's fold") if line in mine]


def _lines_of(path: Path) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = []
    for line in log_text(path).splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


async def test_input_sent_right_after_idle_is_taken_by_its_holder_and_never_handed_back(
    stack: Stack, client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    rounds = 60
    stream = await open_stream(client, session.id)
    async with stream:
        await send_text(client, session.id, "round 0")
        for n in range(1, rounds + 1):
            events = await read_until_idle(stream)
            assert events[-1].stop_reason.type == "end_turn"
            if n < rounds:
                await send_text(client, session.id, f"round {n}")  # the moment the idle is seen

    types = [e.type for e in await all_events(client, session.id)]
    assert types.count("agent.message") == rounds
    # Input logged in the last moment of a run (after the holder's last look at the log, before it
    # lets the session go) is taken back by the holder itself, which looks at the log again right
    # after letting go; a wake-up that found the session leased meanwhile leaves it to the holder.
    # A wake-up whose watch of the lease starts only after the holder let go still learns how far it
    # got (the release is the delete itself, naming it). So no turn ever starts on a worker that had
    # to wait for another to let the session go, and no wake-up is handed back to the queue with a
    # delay.
    waited = harness_lines(stack, session.id, "a turn starts after waiting for the lease hand-off")
    handed_back = harness_lines(stack, session.id, "lease held elsewhere all along; handing the wake-up back")
    retaken = harness_lines(stack, session.id, "input logged as the session was let go; taking it back")
    served = harness_lines(stack, session.id, "the holder let the session go having served this wake-up")
    assert waited == [], (
        f"{len(waited)} of {rounds} turns waited for a lease hand-off "
        f"({len(retaken)} taken back by their holder, {len(served)} wake-ups served by it)"
    )
    assert handed_back == [], f"{len(handed_back)} wake-ups handed back"
