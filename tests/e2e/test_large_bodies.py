"""Sessions and agents of any size: bodies far larger than one NATS message (1 MiB) are accepted,
stored whole in the log (in parts, see ``corral.bus.records``) and returned whole by ``events.list``
and the stream; only a body over the gateway's limit (``CORRAL_GATEWAY_MAX_BODY_BYTES``, 32 MiB) is a
413, and a string that is not valid Unicode is a 400; never a 500."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import httpx
import pytest

from corral.bus import Bus, records
from corral.contracts import headers as h
from corral.contracts import subjects
from tests.e2e.flows import all_events, open_stream, read_until_idle, send_text
from tests.e2e.test_bad_input import assert_error

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


@pytest.fixture
async def session_id(client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]) -> str:
    agent_id, env_id = agent_env
    return (await client.beta.sessions.create(agent=agent_id, environment_id=env_id)).id


def message(text: str) -> dict[str, Any]:
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}


async def pages(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    """Every page of ``events.list`` (raw JSON), walking ``next_page``."""
    out: list[dict[str, Any]] = []
    params: dict[str, str] = {}
    while True:
        response = await http.get(f"/v1/sessions/{session_id}/events", params=params, timeout=60)
        assert response.status_code == 200, response.text[:500]
        out.append(response.json())
        if not out[-1].get("next_page"):
            return out
        params = {"page": out[-1]["next_page"]}


@pytest.mark.parametrize("size", [MIB + MIB // 2, 4 * MIB, 20_000_000], ids=["1.5MiB", "4MiB", "20MB"])
async def test_a_user_message_larger_than_a_bus_message_is_stored_and_returned_whole(
    client: anthropic.AsyncAnthropic, http: httpx.AsyncClient, bus: Bus, session_id: str, size: int
) -> None:
    text = "m" * (size - 7) + "-ending"
    watcher = anthropic.AsyncAnthropic(base_url=str(client.base_url), api_key=client.api_key, max_retries=0)
    stream = await open_stream(watcher, session_id)  # a second client, following all along
    async with stream:
        sent = await client.beta.sessions.events.send(session_id, events=[message(text)], timeout=120)
        assert sent.data[0].content[0].text == text

        async with asyncio.timeout(60):
            async for event in stream:
                if event.type == "user.message":
                    assert event.id == sent.data[0].id and event.content[0].text == text
                    break

    listed = [e for e in await all_events(client, session_id) if e.type == "user.message"]
    assert [(e.id, e.content[0].text) for e in listed] == [(sent.data[0].id, text)]
    for page in await pages(http, session_id):
        if len(page["data"]) > 1:  # a page of several events stays within one bus message
            assert len(json.dumps(page).encode()) < bus.max_payload
    log = [m async for m in bus.read(subjects.SESSIONS_STREAM, subjects.session_log(session_id))]
    assert any(m.first_seq is not None and len(m.data) > size for m in log)  # stored in parts


async def test_a_body_over_the_gateway_limit_is_a_413_and_the_session_still_works(
    http: httpx.AsyncClient, client: anthropic.AsyncAnthropic, session_id: str
) -> None:
    before = [e.id for e in await all_events(client, session_id)]
    response = await http.post(
        f"/v1/sessions/{session_id}/events",
        content=b"x" * (33 * MIB),
        headers={"content-type": "application/json"},
        timeout=120,
    )
    body = assert_error(response, 413, "request_too_large", "limit of", "bytes")
    assert body["request_id"].startswith("req_")
    assert [e.id for e in await all_events(client, session_id)] == before
    sent = await send_text(client, session_id, "still here?")
    assert sent.id in [e.id for e in await all_events(client, session_id)]


async def test_an_agent_with_a_system_prompt_of_megabytes_is_stored_and_used_whole(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    system = "s" * 3_500_000
    agent = await client.beta.agents.create(name="huge", model="claude-sonnet-4-6", system=system, timeout=60)
    assert (await client.beta.agents.retrieve(agent.id)).system == system
    listed = [a async for a in client.beta.agents.list(limit=100) if a.id == agent.id]
    assert [a.system for a in listed] == [system]
    session = await client.beta.sessions.create(agent=agent.id, environment_id=agent_env[1], timeout=60)
    assert (await client.beta.sessions.retrieve(session.id)).agent.system == system


async def test_a_long_session_of_large_messages_keeps_every_event_whole(
    client: anthropic.AsyncAnthropic, http: httpx.AsyncClient, bus: Bus, session_id: str
) -> None:
    """14 turns of 300 KB user messages (the embedded model quotes what it was sent)."""
    watcher = anthropic.AsyncAnthropic(base_url=str(client.base_url), api_key=client.api_key, max_retries=0)
    texts = [f"turn {i}: " + chr(ord("a") + i) * 300_000 for i in range(14)]
    seen: list[Any] = []
    stream = await open_stream(watcher, session_id)
    async with stream:
        for text in texts:  # every turn completes, long after the log passed one message's size
            turn_stream = await open_stream(client, session_id)
            async with turn_stream:
                await send_text(client, session_id, text)
                await read_until_idle(turn_stream, timeout=60)
        sent_ids = {e.id for e in await all_events(client, session_id) if e.type == "user.message"}
        async with asyncio.timeout(60):
            async for event in stream:
                seen.append(event)
                if sent_ids <= {e.id for e in seen if e.type == "user.message"}:
                    break

    events = await all_events(client, session_id)
    assert [e.content[0].text for e in events if e.type == "user.message"] == texts
    walked = [e for page in await pages(http, session_id) for e in page["data"]]
    assert [e["id"] for e in walked] == [e.id for e in events]
    assert [e.content[0].text for e in seen if e.type == "user.message"] == texts
    log_bytes = sum([len(m.data) async for m in bus.read(subjects.SESSIONS_STREAM, subjects.session_log(session_id))])
    assert log_bytes > 4 * MIB

    replies = [e for e in events if e.type == "agent.message"]
    assert len(replies) == len(texts)


@pytest.mark.parametrize("escape", ["\\ud800", "\\udc00", "a\\ud800b\\udc00"], ids=["high", "low", "reversed"])
async def test_a_lone_surrogate_is_a_400_and_the_log_is_unchanged(
    http: httpx.AsyncClient, session_id: str, escape: str
) -> None:
    before = len((await http.get(f"/v1/sessions/{session_id}/events")).json()["data"])
    raw = '{"events":[{"type":"user.message","content":[{"type":"text","text":"ESCAPE"}]}]}'.replace("ESCAPE", escape)
    response = await http.post(
        f"/v1/sessions/{session_id}/events", content=raw.encode(), headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_request_error", "events.0.content.0.text", "surrogate")
    assert len((await http.get(f"/v1/sessions/{session_id}/events")).json()["data"]) == before
    created = await http.post("/v1/agents", content=b'{"name":"\\udfff","model":"claude-sonnet-4-6"}')
    assert_error(created, 400, "invalid_request_error", "name", "surrogate")


async def test_a_half_record_left_by_a_crashed_writer_is_skipped_and_does_not_block_the_session(
    client: anthropic.AsyncAnthropic, http: httpx.AsyncClient, bus: Bus, session_id: str
) -> None:
    """Two of three parts of a record on the session's subject, as a store that died mid-append
    leaves them: the next append is fenced past them, and no reader ever sees them."""
    subject = subjects.session_log(session_id)
    before = [e.id for e in await all_events(client, session_id)]
    tail = await bus.last_seq(subjects.SESSIONS_STREAM, subject)
    half = json.dumps(message("h" * (2 * bus.chunk_size + 10)) | {"id": "sevt_half"}).encode()
    chunks = records.split(half, bus.chunk_size)
    sha = records.digest(half)
    first = 0
    for i, chunk in enumerate(chunks[:2], 1):
        hdrs = records.part_headers({}, "half-record", i, len(chunks), sha)
        if first:
            hdrs[h.RECORD_FIRST_SEQ] = str(first)
        hdrs[h.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(tail)
        tail = (await bus.publish_raw(subject, chunk, headers=hdrs)).seq
        first = first or tail

    sent = await send_text(client, session_id, "after the crash")
    events = await all_events(client, session_id)
    assert [e.id for e in events][: len(before)] == before
    assert sent.id in [e.id for e in events] and "sevt_half" not in [e.id for e in events]
    assert (await bus.last_seq(subjects.SESSIONS_STREAM, subject)) > tail
