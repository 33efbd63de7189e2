"""Concurrent appends to one session: each lands once, in one total order; a stale writer loses."""

from __future__ import annotations

import asyncio

import anthropic
import pytest

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.rpc import AppendEvents, Op, RpcReply

pytestmark = pytest.mark.e2e


async def test_two_clients_appending_at_once_each_land_once_in_one_order(
    client: anthropic.AsyncAnthropic, stack: object, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)

    async def writer(name: str, count: int) -> list[str]:
        sent = []
        for i in range(count):
            event = await client.beta.sessions.events.send(
                session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": f"{name}-{i}"}]}]
            )
            sent.append(event.data[0].id)
        return sent

    a, b = await asyncio.gather(writer("a", 25), writer("b", 25))
    listed = [e async for e in client.beta.sessions.events.list(session.id, types=["user.message"])]
    ids = [e.id for e in listed]
    assert sorted(ids) == sorted(a + b)
    assert len(set(ids)) == len(ids) == 50
    # One total order: each writer's own events appear in the order it sent them.
    assert [i for i in ids if i in set(a)] == a
    assert [i for i in ids if i in set(b)] == b
    stamps = [e.processed_at for e in listed]
    assert stamps == sorted(stamps)


async def test_an_append_with_a_stale_expected_sequence_is_rejected(
    client: anthropic.AsyncAnthropic, bus: Bus, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    last = await bus.last_seq(subjects.SESSIONS_STREAM, subjects.session_log(session.id))

    async def append(text: str) -> RpcReply:
        request = AppendEvents(
            workspace_id=None,
            session_id=session.id,
            events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}],
            expected_last_seq=last,
        )
        raw = await bus.request(subjects.store_rpc(Op.EVENTS_APPEND), request.model_dump_json().encode())
        return RpcReply.model_validate_json(raw)

    replies = await asyncio.gather(append("one"), append("two"))
    winners = [r for r in replies if r.ok]
    losers = [r for r in replies if not r.ok]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].error is not None and losers[0].error.type == "conflict_error"
    texts = [e.content[0].text async for e in client.beta.sessions.events.list(session.id, types=["user.message"])]
    assert len(texts) == 1 and texts[0] in ("one", "two")
