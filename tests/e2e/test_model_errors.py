"""Model errors surface as session.error events with a retry status, and retries are bounded.

While a retry waits the session is ``rescheduling``; an error that ends the turn says ``exhausted``
and the session stays usable (no model error terminates a session, so ``terminal`` never appears)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from tests.e2e.flows import all_events, run_turn

pytestmark = pytest.mark.e2e


def scenario(name: str, error: dict[str, Any], fail_times: int | None) -> dict[str, Any]:
    turn: dict[str, Any] = {"content": [{"type": "text", "text": "recovered"}], "error": error}
    if fail_times is not None:
        turn["fail_times"] = fail_times
    return {"scenarios": [{"name": name, "match": f"^{name}", "turns": [turn]}]}


def types_around_errors(events: list[Any]) -> list[list[str]]:
    """For each session.error: its type and the three event types after it."""
    types = [e.type for e in events]
    return [types[i : i + 4] for i, kind in enumerate(types) if kind == "session.error"]


def assert_spans_closed(events: list[Any]) -> None:
    starts = [e.id for e in events if e.type == "span.model_request_start"]
    ends = [e.model_request_start_id for e in events if e.type == "span.model_request_end"]
    assert sorted(starts) == sorted(ends)


async def new_session(client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]) -> str:
    agent_id, env_id = agent_env
    return (await client.beta.sessions.create(agent=agent_id, environment_id=env_id)).id


async def test_an_overloaded_model_is_retried_and_the_turn_completes(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, agent_env: tuple[str, str]
) -> None:
    overloaded = {"status": 529, "type": "overloaded_error", "message": "busy"}
    await model.post("/_corral/scripts", json=scenario("flaky-model", overloaded, fail_times=2))
    session_id = await new_session(client, agent_env)
    await run_turn(client, session_id, "flaky-model: hello")
    events = await all_events(client, session_id)
    errors = [e for e in events if e.type == "session.error"]
    assert [(e.error.type, e.error.retry_status.type) for e in errors] == [("model_overloaded_error", "retrying")] * 2
    # each retry waits as rescheduling and runs again as it starts
    retried = ["session.error", "session.status_rescheduled", "session.status_running", "span.model_request_start"]
    assert types_around_errors(events) == [retried, retried]
    replies = [e for e in events if e.type == "agent.message"]
    assert len(replies) == 1 and replies[0].content[0].text == "recovered"
    assert events[-1].type == "session.status_idle" and events[-1].stop_reason.type == "end_turn"
    assert sum(1 for e in events if e.type == "span.model_request_end" and e.is_error) == 2
    assert_spans_closed(events)


async def test_a_model_that_keeps_failing_ends_the_turn_with_retries_exhausted(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, agent_env: tuple[str, str]
) -> None:
    await model.post(
        "/_corral/scripts",
        json=scenario("dead-model", {"status": 529, "type": "overloaded_error", "message": "busy"}, fail_times=None),
    )
    session_id = await new_session(client, agent_env)
    streamed = await run_turn(client, session_id, "dead-model: hello")
    assert streamed[-1].stop_reason.type == "retries_exhausted"
    events = await all_events(client, session_id)
    errors = [e.error.retry_status.type for e in events if e.type == "session.error"]
    assert errors[-1] == "exhausted" and set(errors[:-1]) == {"retrying"}
    assert len(errors) == 4  # the first try and three retries
    assert [around[1] for around in types_around_errors(events)] == ["session.status_rescheduled"] * 3 + [
        "session.status_idle"
    ]
    assert not any(e.type in ("agent.message", "session.status_terminated") for e in events)
    assert_spans_closed(events)
    session = await client.beta.sessions.retrieve(session_id)
    assert session.status == "idle"
    # the session stays usable: the next message gets a normal answer once the model is back
    await model.delete("/_corral/scripts", params={"name": "dead-model"})
    again = await run_turn(client, session_id, "are you back?")
    assert again[-1].stop_reason.type == "end_turn"


async def test_a_request_the_model_rejects_is_not_retried(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, agent_env: tuple[str, str]
) -> None:
    bad = {"status": 400, "type": "invalid_request_error", "message": "prompt is too long"}
    await model.post("/_corral/scripts", json=scenario("rejecting-model", bad, fail_times=None))
    session_id = await new_session(client, agent_env)
    streamed = await run_turn(client, session_id, "rejecting-model: hello")
    assert streamed[-1].stop_reason.type == "retries_exhausted"
    events = await all_events(client, session_id)
    errors = [e for e in events if e.type == "session.error"]
    assert len(errors) == 1
    assert errors[0].error.type == "model_request_failed_error"
    # the turn is over, the session is not: exhausted, not terminal (which promises a termination)
    assert errors[0].error.retry_status.type == "exhausted"
    assert "prompt is too long" in errors[0].error.message
    assert not any(e.type in ("session.status_rescheduled", "session.status_terminated") for e in events)
    assert (await client.beta.sessions.retrieve(session_id)).status == "idle"
    await model.delete("/_corral/scripts", params={"name": "rejecting-model"})
    again = await run_turn(client, session_id, "and now?")
    assert again[-1].stop_reason.type == "end_turn"
