"""A POST of many events: each is stored once, in the order sent, with no other event between them,
while other clients append to the same session and its harness runs turns; a retry of the same
batch under its ``Idempotency-Key`` stores nothing more; a session-store killed while storing one
leaves all of its events or none (they are one atomic batch)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import anthropic
import pytest

from corral.bus import Bus
from corral.contracts import subjects
from corral.devstack.stack import Stack

pytestmark = pytest.mark.e2e

BATCH = 20


def batch(name: str) -> list[dict[str, object]]:
    return [{"type": "user.message", "content": [{"type": "text", "text": f"{name}-{i}"}]} for i in range(BATCH)]


async def test_a_batched_post_is_stored_whole_in_order_once(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)

    async def writer(name: str, posts: int) -> list[list[str]]:
        sent = []
        for p in range(posts):
            headers = {"Idempotency-Key": f"test-{uuid.uuid4()}"}
            events = batch(f"{name}{p}")
            first = await client.beta.sessions.events.send(session.id, events=events, extra_headers=headers)  # type: ignore[arg-type]
            again = await client.beta.sessions.events.send(session.id, events=events, extra_headers=headers)  # type: ignore[arg-type]
            assert [e.id for e in again.data] == [e.id for e in first.data]
            assert [e.content[0].text for e in first.data] == [f"{name}{p}-{i}" for i in range(BATCH)]  # type: ignore[union-attr]
            sent.append([e.id for e in first.data])
        return sent

    async def single(count: int) -> list[str]:
        ids = []
        for i in range(count):
            sent = await client.beta.sessions.events.send(session.id, events=batch(f"one{i}")[:1])  # type: ignore[arg-type]
            ids.append(sent.data[0].id)
        return ids

    a, b, ones = await asyncio.gather(writer("a", 4), writer("b", 4), single(20))
    listed = [e async for e in client.beta.sessions.events.list(session.id, limit=1000)]
    ids = [e.id for e in listed]
    assert len(ids) == len(set(ids))  # nothing twice, whatever its type
    messages = [e.id for e in listed if e.type == "user.message"]
    assert sorted(messages) == sorted([i for posted in a + b for i in posted] + ones)
    for posted in a + b:
        start = ids.index(posted[0])
        assert ids[start : start + BATCH] == posted  # whole, in order, nothing in between
    stamps = [e.processed_at for e in listed]
    assert stamps == sorted(stamps)


LARGE = 30
"""Events of the POST the session-store is killed in the middle of storing."""


async def test_a_session_store_killed_while_storing_a_post_leaves_all_of_its_events_or_none(
    stack: Stack, bus: Bus, client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    subject = subjects.session_log(session.id)
    before = await bus.last_seq(subjects.SESSIONS_STREAM, subject)
    # ~12 MB: the store is still sending the POST's events to NATS when the first one goes by
    events = [
        {"type": "user.message", "content": [{"type": "text", "text": f"{i}:" + "x" * 400_000}]} for i in range(LARGE)
    ]
    sent = asyncio.Event()
    async with bus.listen(subject, lambda _: sent.set()):
        post = asyncio.create_task(
            client.with_options(max_retries=0, timeout=60).beta.sessions.events.send(session.id, events=events)  # type: ignore[arg-type]
        )
        try:
            async with asyncio.timeout(60):
                await sent.wait()  # the first event is on its way to the stream
            await asyncio.to_thread(stack.kill, "session-store")
        finally:
            with contextlib.suppress(anthropic.APIError):
                await post
    stack.start_service("session-store")
    stored = [e async for e in client.beta.sessions.events.list(session.id, limit=1000) if e.type == "user.message"]
    assert len(stored) in (0, LARGE), f"{len(stored)} of the POST's {LARGE} events were stored"
    # and the session takes appends again, fenced past whatever the killed store left
    after = await client.beta.sessions.events.send(session.id, events=batch("after")[:2])  # type: ignore[arg-type]
    assert after.data is not None and len(after.data) == 2
    assert await bus.last_seq(subjects.SESSIONS_STREAM, subject) > before
