"""Sessions of any length (issue 11): a tool output of megabytes is kept whole, stored whole in the
log and returned whole by ``events.list`` and the stream, while the model is sent it truncated with a
note naming the event that holds it whole.

The sandbox keeps a tool call's output whole up to ``CORRAL_SANDBOX_OUTPUT_LIMIT`` (8 MiB); the exec
agent sends it in bounded parts, the ``execute`` reply travels through the bodies object store, and
the harness appends it as one record (stored in parts). The harness truncates it in the
conversation past ``CORRAL_HARNESS_TOOL_RESULT_MAX_CHARS`` (100 000).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import httpx
import pytest

from corral.bus import Bus
from corral.contracts import subjects
from tests.e2e.flows import all_events, open_stream, read_until_idle, requests_of, script, send_text, unique
from tests.e2e.test_large_bodies import pages
from tests.e2e.test_tool_loop_sandbox import new_session, use

pytestmark = pytest.mark.e2e

FIVE_MB = 5_000_000
#: What the harness shows the model of a tool result (CORRAL_HARNESS_TOOL_RESULT_MAX_CHARS).
SHOWN_CHARS = 100_000


def result_text(event: Any) -> str:
    return "".join(block.text for block in event.content or [] if block.type == "text")


def tool_results_in(request: dict[str, Any]) -> list[str]:
    """The text of every tool_result block of a Messages request, as the model was sent it."""
    texts = []
    for message in request["messages"]:
        if isinstance(message["content"], str):
            continue
        for block in message["content"]:
            if block.get("type") == "tool_result":
                inner = block.get("content")
                texts.append(inner if isinstance(inner, str) else "".join(b.get("text", "") for b in inner or []))
    return texts


async def test_a_tool_output_over_the_old_cap_is_kept_whole_and_the_model_gets_it_truncated_with_a_note(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    """600 000 bytes of output (six times the former 100 000-byte cap), a log under one bus message."""
    name = unique("big-output")
    await script(
        model,
        name,
        use("bash", command="head -c 600000 /dev/zero | tr '\\0' y"),
        [{"type": "text", "text": "That was a lot of y."}],
    )
    session_id = await new_session(client)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: print a lot")
        streamed = await read_until_idle(stream, timeout=180)
    assert streamed[-1].stop_reason.type == "end_turn"
    (result,) = [e for e in streamed if e.type == "agent.tool_result"]
    assert not result.is_error and result_text(result) == "y" * 600_000
    (listed,) = [e for e in await all_events(client, session_id) if e.type == "agent.tool_result"]
    assert result_text(listed) == "y" * 600_000

    requests = await requests_of(model, name)
    assert len(requests) == 2
    (shown,) = tool_results_in(requests[1])
    assert shown.startswith("y" * SHOWN_CHARS) and len(shown) < SHOWN_CHARS + 1000
    assert f"The whole result is kept in the session log as event {result.id}" in shown
    assert len(json.dumps(requests[1]).encode()) < SHOWN_CHARS + 50_000


async def test_14_user_messages_of_300_kb_and_a_5_mb_tool_output_every_event_whole(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, http: httpx.AsyncClient, bus: Bus
) -> None:
    """The issue's acceptance: 14 user messages of 300 KB each and one tool turn whose bash prints
    5 MB; every turn ends with ``end_turn``; ``events.list`` (walking pages, each page's reply
    bounded) and the stream return every event whole; a second client, following the stream from the
    start, gets every event whole."""
    name = unique("long-session")
    await script(
        model,
        name,
        use("bash", command=f"head -c {FIVE_MB} /dev/zero | tr '\\0' x"),
        [{"type": "text", "text": "Printed five megabytes."}],
        *([{"type": "text", "text": f"reply {i}"}] for i in range(2, 15)),
    )
    session_id = await new_session(client)
    texts = [f"{name}: turn {i}: " + chr(ord("a") + i) * 300_000 for i in range(14)]
    watcher = anthropic.AsyncAnthropic(base_url=str(client.base_url), api_key=client.api_key, max_retries=0)
    followed = await open_stream(watcher, session_id)
    ends: list[str] = []
    async with followed:
        for i, text in enumerate(texts):
            turn = await open_stream(client, session_id)
            async with turn:
                await send_text(client, session_id, text)
                shown = await read_until_idle(turn, timeout=240 if i == 0 else 60)
                ends.append(shown[-1].stop_reason.type)
                if i == 0:  # the tool turn: its result, whole, on the turn's own stream
                    (result,) = [e for e in shown if e.type == "agent.tool_result"]
                    assert result_text(result) == "x" * FIVE_MB and not result.is_error
        events = await all_events(client, session_id)
        seen: list[Any] = []
        async with asyncio.timeout(120):
            async for event in followed:
                seen.append(event)
                if len(seen) == len(events):
                    break

    # the log, events.list and both streams hold every event whole
    assert [e.content[0].text for e in events if e.type == "user.message"] == texts
    (result,) = [e for e in events if e.type == "agent.tool_result"]
    assert result_text(result) == "x" * FIVE_MB and not result.is_error
    walked = [e for page in await pages(http, session_id) for e in page["data"]]
    assert [e["id"] for e in walked] == [e.id for e in events]
    for page in await pages(http, session_id):
        if len(page["data"]) > 1:  # a page of several events stays within one bus message
            assert len(json.dumps(page).encode()) < bus.max_payload
    (walked_result,) = [e for e in walked if e["type"] == "agent.tool_result"]
    assert walked_result["content"][0]["text"] == "x" * FIVE_MB
    assert [e.id for e in seen] == [e.id for e in events]
    assert [e.content[0].text for e in seen if e.type == "user.message"] == texts
    (seen_result,) = [e for e in seen if e.type == "agent.tool_result"]
    assert result_text(seen_result) == "x" * FIVE_MB
    log = [m async for m in bus.read(subjects.SESSIONS_STREAM, subjects.session_log(session_id))]
    assert any(m.first_seq is not None and len(m.data) >= FIVE_MB for m in log)  # stored in parts, whole

    assert ends == ["end_turn"] * 14
    # the model was never sent the 5 MB: the result truncated, with the note saying where it is whole
    # (once compacted, a conversation no longer starts with the scenario's name: look at every
    # request the model was sent that holds this session's tool result)
    answer = await model.get("/_corral/requests")
    # (the model server holds every test's requests: keep those of this session, which name the
    # scenario or the tool result)
    everyone = [json.dumps(entry["body"]) for entry in answer.json()["requests"] if not entry["errored"]]
    ours = [body for body in everyone if name in body or result.id in body]
    requests = [json.loads(body) for body in ours]
    shown = [text for request in requests for text in tool_results_in(request) if result.id in text]
    assert shown, "no request showed the 5 MB result's note"
    assert all(len(text) < SHOWN_CHARS + 1000 for text in shown)
    assert all(f"session log as event {result.id}" in text for text in shown)
    assert not any("x" * (SHOWN_CHARS + 1000) in body for body in ours)
