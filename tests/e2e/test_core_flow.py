"""The whole core flow through the official anthropic SDK, against a running Corral stack."""

from __future__ import annotations

import asyncio
import contextlib

import anthropic
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral.bus import Bus
from corral.contracts import subjects
from corral.devstack.stack import Stack
from tests.e2e.flows import all_events, open_stream, read_until_idle, run_turn, send_text, unique
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


async def test_a_text_turn_streams_lists_and_accounts_exactly_as_the_sdk_expects(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id, title="core flow")
    assert session.status == "idle"
    assert session.agent.id == agent_id and session.agent.version == 1

    streamed = await run_turn(client, session.id, "What is Corral?")
    # Read straight after the stream showed the turn end: the session reflects it already.
    done = await client.beta.sessions.retrieve(session.id)
    types = [e.type for e in streamed]
    assert types == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    reply = streamed[3]
    assert "What is Corral?" in reply.content[0].text
    end = streamed[4]
    assert end.model_request_start_id == streamed[2].id
    assert end.model_usage.input_tokens > 0 and end.model_usage.output_tokens > 0
    assert streamed[5].stop_reason.type == "end_turn"

    listed = await all_events(client, session.id)
    assert [e.id for e in listed] == [e.id for e in streamed]
    assert [e.model_dump() for e in listed] == [e.model_dump() for e in streamed]

    walked = []
    page = await client.beta.sessions.events.list(session.id, limit=1)
    async for event in page:
        walked.append(event.id)
    assert walked == [e.id for e in streamed]

    filtered = [e async for e in client.beta.sessions.events.list(session.id, types=["agent.message"])]
    assert [e.id for e in filtered] == [reply.id]

    assert done.status == "idle"
    assert done.usage.input_tokens == end.model_usage.input_tokens
    assert done.usage.output_tokens == end.model_usage.output_tokens
    assert done.usage.active_seconds is not None and done.usage.active_seconds > 0
    assert done.stats.duration_seconds is not None and done.stats.duration_seconds >= done.usage.active_seconds

    archived = await client.beta.sessions.archive(session.id)
    assert archived.archived_at is not None
    deleted = await client.beta.sessions.delete(session.id)
    assert deleted.id == session.id and deleted.type == "session_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.sessions.retrieve(session.id)


async def test_the_stream_stays_open_across_turns_and_the_model_sees_the_history(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    stream = await open_stream(client, session.id)
    async with stream:
        await send_text(client, session.id, "first")
        first = await read_until_idle(stream)
        await send_text(client, session.id, "second")
        second = await read_until_idle(stream)
    assert [e.type for e in first][-1] == [e.type for e in second][-1] == "session.status_idle"
    replies = [e for e in first + second if e.type == "agent.message"]
    assert len(replies) == 2
    assert '"second"' in replies[1].content[0].text
    usage = (await client.beta.sessions.retrieve(session.id)).usage
    ends = [e for e in first + second if e.type == "span.model_request_end"]
    assert usage.input_tokens == sum(e.model_usage.input_tokens for e in ends)


async def test_opted_in_deltas_concatenate_to_the_final_message(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, agent_env: tuple[str, str]
) -> None:
    # A reply written over a moment, as a model writes: the gateway forwards a delta only until the
    # finished message arrives, so a reply that arrives all at once may have none forwarded.
    name = unique("deltas")
    text = "Here is a reply, written out a few words at a time so its preview can be seen growing."
    turn = {"content": [{"type": "text", "text": text}], "chunk_delay_ms": 20}
    scenario = {"scenarios": [{"name": name, "match": f"^{name}", "turns": [turn]}]}
    assert (await model.post("/_corral/scripts", json=scenario)).status_code == 200
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    streamed = await run_turn(client, session.id, f"{name}: stream me please", event_deltas=["agent.message"])
    starts = [e for e in streamed if e.type == "event_start"]
    deltas = [e for e in streamed if e.type == "event_delta"]
    message = next(e for e in streamed if e.type == "agent.message")
    assert [s.event.id for s in starts] == [message.id]
    assert deltas, "no deltas were streamed"
    assert all(d.event_id == message.id for d in deltas)
    assert message.content[0].text == text
    assert text.startswith("".join(d.delta.content.text for d in deltas))
    listed = await all_events(client, session.id)
    assert not any(e.type in ("event_start", "event_delta") for e in listed)


async def test_agents_environments_and_sessions_round_trip_through_the_sdk(client: anthropic.AsyncAnthropic) -> None:
    agent = await client.beta.agents.create(
        name="crud", model={"id": "claude-opus-4-8", "effort": "low"}, tools=[{"type": "agent_toolset_20260401"}]
    )
    assert agent.model.effort is not None and agent.model.effort.type == "low"
    assert len(agent.tools[0].configs) == 8
    updated = await client.beta.agents.update(agent.id, version=1, system="new system")
    assert updated.version == 2 and updated.system == "new system"
    with pytest.raises(anthropic.ConflictError):
        await client.beta.agents.update(agent.id, version=1, system="stale")
    first = await client.beta.agents.retrieve(agent.id, version=1)
    assert first.system is None and first.version == 1
    versions = [v.version async for v in client.beta.agents.versions.list(agent.id)]
    assert versions == [1, 2]

    env = await client.beta.environments.create(name=f"crud-{agent.id.lower()}", metadata={"team": "x"})
    env2 = await client.beta.environments.update(env.id, description="d", metadata={"team": None, "k": "v"})
    assert env2.description == "d" and env2.metadata == {"k": "v"}
    with pytest.raises(anthropic.ConflictError):
        await client.beta.environments.create(name=env.name)

    pinned = await client.beta.sessions.create(
        agent={"type": "agent", "id": agent.id, "version": 1}, environment_id=env.id
    )
    assert pinned.agent.version == 1 and pinned.agent.system is None
    latest = await client.beta.sessions.create(agent=agent.id, environment_id=env.id, metadata={"a": "1"})
    assert latest.agent.version == 2
    renamed = await client.beta.sessions.update(latest.id, title="renamed", metadata={"a": None, "b": "2"})
    assert renamed.title == "renamed" and renamed.metadata == {"b": "2"}
    mine = [s.id async for s in client.beta.sessions.list(agent_id=agent.id)]
    assert set(mine) == {pinned.id, latest.id}
    assert mine[0] == latest.id  # newest first by default
    one_v1 = [s.id async for s in client.beta.sessions.list(agent_id=agent.id, agent_version=1)]
    assert one_v1 == [pinned.id]

    archived = await client.beta.agents.archive(agent.id)
    assert archived.archived_at is not None
    with pytest.raises(anthropic.BadRequestError):
        await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    listed = [a.id async for a in client.beta.agents.list()]
    assert agent.id not in listed
    listed_all = [a.id async for a in client.beta.agents.list(include_archived=True, limit=100)]
    assert agent.id in listed_all

    gone = await client.beta.environments.delete(env.id)
    assert gone.type == "environment_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.environments.retrieve(env.id)


async def test_many_open_streams_share_one_follow_and_each_shows_only_its_session(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str], bus: Bus
) -> None:
    """Open streams cost the gateway no JetStream consumer each (one follow serves them all), and
    each still shows exactly its own session's turn, in order."""
    agent_id, env_id = agent_env
    sessions = [(await client.beta.sessions.create(agent=agent_id, environment_id=env_id)).id for _ in range(24)]
    before = await _consumers(bus)
    async with contextlib.AsyncExitStack() as streams:
        opened = [await streams.enter_async_context(await open_stream(client, sid)) for sid in sessions]
        # one consumer per stream would add 24; reads of other tests' sessions come and go meanwhile
        assert await _consumers(bus) - before < 5
        talking = sessions[:3]
        for sid in talking:
            await send_text(client, sid, f"hello from {sid}")
        turns = await asyncio.gather(*(read_until_idle(opened[i]) for i in range(3)))
    for sid, turn in zip(talking, turns, strict=True):
        assert [e.type for e in turn] == [
            "user.message",
            "session.status_running",
            "span.model_request_start",
            "agent.message",
            "span.model_request_end",
            "session.status_idle",
        ]
        assert turn[0].content[0].text == f"hello from {sid}"
        assert [e.id for e in turn] == [e.id for e in await all_events(client, sid)]


async def _consumers(bus: Bus) -> int:
    info = await bus._js.stream_info(subjects.SESSIONS_STREAM)  # noqa: SLF001 - a count only the server knows
    return int(info.state.consumer_count)


async def test_a_client_that_disconnects_frees_its_streams_registration(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str], stack: Stack
) -> None:
    """A stream whose client goes away is gone from the gateway (its queue left the follow and the
    open-stream registry) without the session doing anything: the open-streams gauge falls back."""
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    before = await _open_streams(stack)
    streams = [await open_stream(client, session.id) for _ in range(3)]
    await eventually(lambda: _at_least(stack, before + 3))
    for stream in streams:
        await stream.close()  # the client disconnects; the session stays idle, nothing is appended
    await eventually(lambda: _at_most(stack, before), timeout=10)


async def _open_streams(stack: Stack) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(stack.metrics_urls()["gateway"])).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "corral_gateway_open_streams":
                return float(sample.value)
    raise AssertionError("the gateway exposes no corral_gateway_open_streams")


async def _at_least(stack: Stack, value: float) -> bool:
    return await _open_streams(stack) >= value


async def _at_most(stack: Stack, value: float) -> bool:
    return await _open_streams(stack) <= value
