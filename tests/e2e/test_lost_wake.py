"""Input whose wake-up was lost (the store died between the append and the wake) is still answered:
session-store wakes every session with unanswered input when it starts."""

from __future__ import annotations

import asyncio
import json

import anthropic
import pytest

from corral.bus import Bus
from corral.contracts import ids, subjects
from corral.contracts.clock import now_rfc3339
from corral.devstack.stack import Stack
from tests.e2e.flows import all_events

pytestmark = pytest.mark.e2e


async def test_a_message_whose_wake_was_lost_is_answered_after_a_store_restart(
    stack: Stack, bus: Bus, client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    stack.stop_service("session-store")
    try:
        # What the log holds when the store stored the message and died before publishing its wake.
        subject = subjects.session_log(session.id)
        last = await bus.last_seq(subjects.SESSIONS_STREAM, subject)
        message = {
            "type": "user.message",
            "id": ids.new_id(ids.EVENT),
            "processed_at": now_rfc3339(),
            "content": [{"type": "text", "text": "was my wake lost?"}],
        }
        await bus.publish(subject, json.dumps(message).encode(), expected_last_subject_seq=last)
    finally:
        stack.start_service("session-store")
    async with asyncio.timeout(30):
        while True:
            events = await all_events(client, session.id)
            if events and events[-1].type == "session.status_idle":
                break
            await asyncio.sleep(0.2)
    types = [e.type for e in events]
    assert types.count("agent.message") == 1
    assert "was my wake lost?" in next(e for e in events if e.type == "agent.message").content[0].text
