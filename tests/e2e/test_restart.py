"""`make down && make up` keeps every object and event, and the projection equals a fold of the log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import asyncpg
import pytest

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.log import parse_session_record
from corral.devstack.stack import Stack
from corral.session_store.domain.sessions import SessionRow
from tests.e2e.conftest import start_stack
from tests.e2e.flows import all_events, run_turn

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    state = tmp_path_factory.mktemp("restart")
    stack = start_stack(state)
    try:
        yield stack, state
    finally:
        stack.stop()


async def snapshot(client: anthropic.AsyncAnthropic) -> dict[str, Any]:
    agents = [a.model_dump() async for a in client.beta.agents.list(include_archived=True, limit=100)]
    envs = [e.model_dump() async for e in client.beta.environments.list(include_archived=True, limit=100)]
    sessions = [s async for s in client.beta.sessions.list(include_archived=True, limit=100)]
    events = {s.id: [e.model_dump() for e in await all_events(client, s.id)] for s in sessions}
    stable = [s.model_dump(exclude={"stats"}) for s in sessions]
    return {"agents": agents, "environments": envs, "sessions": stable, "events": events}


async def fold_matches_projection(stack: Stack) -> None:
    """Rebuild every session row and event index from the stream alone and compare with Postgres."""
    folded: dict[str, SessionRow] = {}
    events: dict[str, list[tuple[int, str]]] = {}
    async with Bus.connect(stack.nats_settings(), name="fold") as bus:
        async for msg in bus.read(subjects.SESSIONS_STREAM, subjects.SESSIONS_WILDCARD):
            sid = subjects.session_id_of(msg.subject)
            record = parse_session_record(msg.data)
            folded.setdefault(sid, SessionRow(session_id=sid)).apply(record, msg.seq)
            if not record.type.startswith("corral."):
                events.setdefault(sid, []).append((msg.seq, str(getattr(record, "id", ""))))
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = {r["session_id"]: r for r in await conn.fetch("SELECT * FROM sessions")}
        indexed = await conn.fetch("SELECT session_id, seq, event_id FROM events ORDER BY session_id, seq")
    finally:
        await conn.close()
    live = {sid: row for sid, row in folded.items() if not row.deleted and row.created_at is not None}
    assert set(rows) == set(live)
    now = datetime.now(UTC)
    for sid, row in live.items():
        db = rows[sid]
        assert db["status"] == row.status
        assert db["last_seq"] == row.last_seq
        assert (db["input_tokens"], db["output_tokens"]) == (row.input_tokens, row.output_tokens)
        assert db["active_seconds"] == pytest.approx(row.active_seconds)
        assert json.loads(db["body"]) == row.body
        assert row.session(now)["usage"]["input_tokens"] == db["input_tokens"]
    by_session: dict[str, list[tuple[int, str]]] = {}
    for r in indexed:
        by_session.setdefault(r["session_id"], []).append((r["seq"], r["event_id"]))
    assert by_session == {sid: ev for sid, ev in events.items() if sid in live}


async def test_down_and_up_keep_every_object_and_event(own_stack: tuple[Stack, Path]) -> None:
    stack, state = own_stack
    async with anthropic.AsyncAnthropic(base_url=stack.gateway_url, api_key=stack.api_key, max_retries=0) as client:
        before = await populate(client)
        await fold_matches_projection(stack)

    stack.stop()
    again = start_stack(state)  # same state dir: what `make down && make up` does
    try:
        async with anthropic.AsyncAnthropic(base_url=again.gateway_url, api_key=again.api_key, max_retries=0) as client:
            after = await snapshot(client)
            assert after == before
            agent_id = before["agents"][0]["id"]
            assert [v.version async for v in client.beta.agents.versions.list(agent_id)] == [1, 2]
            await fold_matches_projection(again)
            kept = next(s for s in before["sessions"] if s["title"] == "kept")
            events = await run_turn(client, kept["id"], "still there?")  # and it keeps working
            assert events[-1].type == "session.status_idle"
    finally:
        again.stop()


async def populate(client: anthropic.AsyncAnthropic) -> dict[str, Any]:
    agent = await client.beta.agents.create(name="durable", model="claude-haiku-4-5")
    await client.beta.agents.update(agent.id, system="v2")
    env = await client.beta.environments.create(name="durable-env")
    kept = await client.beta.sessions.create(agent=agent.id, environment_id=env.id, title="kept")
    await run_turn(client, kept.id, "remember me")
    archived = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    await client.beta.sessions.archive(archived.id)
    deleted = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    await run_turn(client, deleted.id, "forget me")
    await client.beta.sessions.delete(deleted.id)
    return await snapshot(client)


async def test_the_projection_is_rebuilt_from_the_streams_when_postgres_loses_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    stack = start_stack(tmp_path_factory.mktemp("rebuild"))
    try:
        async with anthropic.AsyncAnthropic(base_url=stack.gateway_url, api_key=stack.api_key, max_retries=0) as client:
            before = await populate(client)
        stack.stop_service("session-store")
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute(
                "TRUNCATE agents, agent_versions, environments, sessions, events, api_keys, projection_positions"
            )
        finally:
            await conn.close()
        stack.start_service("session-store")
        async with anthropic.AsyncAnthropic(base_url=stack.gateway_url, api_key=stack.api_key, max_retries=0) as client:
            assert await snapshot(client) == before
        await fold_matches_projection(stack)
    finally:
        stack.stop()
