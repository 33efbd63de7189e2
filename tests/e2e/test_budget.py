"""A session's budget is enforced (managed-agents-api.md section 15): the harness checks it before
every model request, and when the list cost has reached it the session pauses with ``session.usage``
then ``session.status_idle`` (``budget_reached``) instead of asking the model again. While paused it
takes no new messages; raising the budget (or removing it) and sending a message resumes it.

The embedded model is scripted to report 40,000 output tokens per reply: $0.60 at the list price of
claude-sonnet-4-6 ($15 per million output tokens), so a $1.00 budget allows two requests.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from tests.e2e.flows import all_events, open_stream, read_until_idle, requests_of, run_turn, send_text, unique

pytestmark = pytest.mark.e2e

OUTPUT_TOKENS = 40_000


def limit(cents: int) -> dict[str, Any]:
    return {"type": "limit", "max_list_cost": {"amount": str(cents), "currency": "USD"}}


def turn(*content: dict[str, Any]) -> dict[str, Any]:
    return {"content": list(content), "usage": {"output_tokens": OUTPUT_TOKENS}}


def bash(command: str) -> dict[str, Any]:
    return {"type": "tool_use", "name": "bash", "input": {"command": command}}


async def test_a_session_pauses_at_its_budget_and_resumes_once_the_budget_is_raised(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    name = unique("budget")
    scenario = {
        "name": name,
        "match": f"^{name}",
        "turns": [
            turn({"type": "text", "text": "Step one."}, bash("echo one")),
            turn(bash("echo two")),
            turn({"type": "text", "text": "All done."}),
        ],
    }
    assert (await model.post("/_corral/scripts", json={"scenarios": [scenario]})).status_code == 200
    agent = await client.beta.agents.create(
        name="e2e budget", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    env = await client.beta.environments.create(name=unique("e2e-budget"))
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id, budget=limit(100))

    stream = await open_stream(client, session.id)
    async with stream:
        await send_text(client, session.id, f"{name}: echo one, then two, then stop")
        streamed = await read_until_idle(stream, timeout=180)

    # Two requests ran (the second crossed the budget); the third was never made.
    assert len(await requests_of(model, name)) == 2
    assert [e.type for e in streamed[-2:]] == ["session.usage", "session.status_idle"]
    usage_event, idle = streamed[-2:]
    assert idle.stop_reason.type == "budget_reached"
    spent = int(usage_event.usage.list_cost.amount)
    assert spent >= 120 and usage_event.usage.list_cost.currency == "USD"
    assert usage_event.usage.output_tokens == 2 * OUTPUT_TOKENS
    assert usage_event.budget is not None and usage_event.budget.max_list_cost.amount == "100"
    results = [e for e in streamed if e.type == "agent.tool_result"]
    assert len(results) == 2 and not any(r.is_error for r in results)  # both tool calls ran

    paused = await client.beta.sessions.retrieve(session.id)
    assert paused.status == "idle"
    assert paused.usage.list_cost is not None and int(paused.usage.list_cost.amount) == spent

    # Paused: no new input, and a budget that is not above what was spent is refused.
    with pytest.raises(anthropic.BadRequestError, match="raise the budget or remove it"):
        await send_text(client, session.id, "please go on")
    with pytest.raises(anthropic.BadRequestError, match="already used"):
        await client.beta.sessions.update(session.id, budget=limit(spent))
    assert len(await requests_of(model, name)) == 2

    raised = await client.beta.sessions.update(session.id, budget=limit(1000))
    assert raised.budget is not None and raised.budget.max_list_cost.amount == "1000"
    resumed = await run_turn(client, session.id, "go on")

    assert resumed[-1].type == "session.status_idle" and resumed[-1].stop_reason.type == "end_turn"
    requests = await requests_of(model, name)
    assert len(requests) == 3
    last_user = requests[-1]["messages"][-1]
    assert last_user["role"] == "user"
    assert any(block.get("text") == "go on" for block in last_user["content"])
    events = await all_events(client, session.id)
    assert [e.type for e in events].count("session.updated") == 1
    assert [e.stop_reason.type for e in events if e.type == "session.status_idle"] == ["budget_reached", "end_turn"]


async def test_removing_the_budget_lets_a_paused_session_go_on(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    name = unique("budget-off")
    scenario = {
        "name": name,
        "match": f"^{name}",
        "turns": [turn({"type": "text", "text": "One."}), turn({"type": "text", "text": "Two."})],
    }
    assert (await model.post("/_corral/scripts", json={"scenarios": [scenario]})).status_code == 200
    agent = await client.beta.agents.create(name="e2e budget", model="claude-sonnet-4-6")
    env = await client.beta.environments.create(name=unique("e2e-budget"))
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id, budget=limit(50))

    first = await run_turn(client, session.id, f"{name}: hello")
    assert first[-1].stop_reason.type == "end_turn"  # $0.60 spent: the budget is reached from now on
    second = await run_turn(client, session.id, "again")
    assert [e.type for e in second[-2:]] == ["session.usage", "session.status_idle"]
    assert second[-1].stop_reason.type == "budget_reached"
    assert len(await requests_of(model, name)) == 1
    with pytest.raises(anthropic.BadRequestError):
        await send_text(client, session.id, "and again")

    removed = await client.beta.sessions.update(session.id, budget=None)
    assert removed.budget is None
    third = await run_turn(client, session.id, "once more")

    assert third[-1].stop_reason.type == "end_turn"
    assert len(await requests_of(model, name)) == 2
