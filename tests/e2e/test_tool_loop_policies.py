"""The tool loop's policies end to end, through the official SDK, with the embedded model scripted to
call tools: custom tools, ``always_ask`` with allow and deny, disabled tools, partial answers and
interrupts. None of these needs a sandbox to answer (a confirmed call that reaches a deployment
without Docker gets an error result, which is itself part of the contract)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from tests.e2e.flows import all_events, open_stream, read_until_idle, requests_of, script, send_text, unique

pytestmark = pytest.mark.e2e

ASK_BASH = {
    "type": "agent_toolset_20260401",
    "configs": [{"name": "bash", "permission_policy": {"type": "always_ask"}}],
}
LOOKUP = {
    "type": "custom",
    "name": "lookup",
    "description": "Look something up in the client's records.",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``tool_result`` blocks of the request's last user turn."""
    last = body["messages"][-1]
    assert last["role"] == "user"
    return [block for block in last["content"] if block["type"] == "tool_result"]


async def new_session(client: anthropic.AsyncAnthropic, *tools: dict[str, Any]) -> str:
    agent = await client.beta.agents.create(name="e2e tools", model="claude-sonnet-4-6", tools=list(tools))
    env = await client.beta.environments.create(name=unique("e2e-tools"))
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    return session.id


async def until_idle(stream: Any, *, timeout: float = 30.0) -> list[Any]:
    """Events up to and including the next ``session.status_idle`` of any kind."""
    return await read_until_idle(stream, timeout=timeout, any_idle=True)


async def status_soon(client: anthropic.AsyncAnthropic, session_id: str, status: str) -> bool:
    """Whether the session shows ``status`` right away (reads include everything a stream has shown)."""
    return (await client.beta.sessions.retrieve(session_id)).status == status


async def send(client: anthropic.AsyncAnthropic, session_id: str, *events: dict[str, Any]) -> None:
    await client.beta.sessions.events.send(session_id, events=list(events))


async def test_a_custom_tool_round_trip(client: anthropic.AsyncAnthropic, model: httpx.AsyncClient) -> None:
    name = unique("custom-tool")
    await script(
        model,
        name,
        [{"type": "text", "text": "Let me ask."}, {"type": "tool_use", "name": "lookup", "input": {"q": "order 7"}}],
        [{"type": "text", "text": "Order 7 shipped."}],
    )
    session_id = await new_session(client, LOOKUP)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: where is order 7?")
        first = await until_idle(stream)
        custom = next(e for e in first if e.type == "agent.custom_tool_use")
        assert (custom.name, custom.input) == ("lookup", {"q": "order 7"})
        assert first[-1].stop_reason.type == "requires_action"
        assert first[-1].stop_reason.event_ids == [custom.id]
        assert await status_soon(client, session_id, "idle")

        await send(
            client,
            session_id,
            {
                "type": "user.custom_tool_result",
                "custom_tool_use_id": custom.id,
                "content": [{"type": "text", "text": "shipped on Monday"}],
            },
        )
        second = await until_idle(stream)

    assert second[-1].stop_reason.type == "end_turn"
    assert [e.type for e in second] == [
        "user.custom_tool_result",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    bodies = await requests_of(model, name)
    assert [t["name"] for t in bodies[0]["tools"]] == ["lookup"]
    assert bodies[1]["messages"][-2]["content"][-1] == {
        "type": "tool_use",
        "id": custom.id,
        "name": "lookup",
        "input": {"q": "order 7"},
    }
    assert tool_results(bodies[1]) == [
        {"type": "tool_result", "tool_use_id": custom.id, "content": [{"type": "text", "text": "shipped on Monday"}]}
    ]


async def test_always_ask_then_deny_tells_the_model_it_was_denied(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    name = unique("ask-deny")
    await script(
        model,
        name,
        [{"type": "tool_use", "name": "bash", "input": {"command": "rm -rf /tmp/x"}}],
        [{"type": "text", "text": "Understood, I will not."}],
    )
    session_id = await new_session(client, ASK_BASH)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: clean up")
        first = await until_idle(stream)
        use = next(e for e in first if e.type == "agent.tool_use")
        assert (use.name, use.input, use.evaluated_permission) == ("bash", {"command": "rm -rf /tmp/x"}, "ask")
        assert use.evaluation is not None and use.evaluation.type == "always_ask"
        assert first[-1].stop_reason.type == "requires_action"
        assert first[-1].stop_reason.event_ids == [use.id]

        await send(
            client,
            session_id,
            {"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "deny", "deny_message": "not today"},
        )
        second = await until_idle(stream)

    assert second[-1].stop_reason.type == "end_turn"
    result = next(e for e in second if e.type == "agent.tool_result")
    denial = [{"type": "text", "text": "The user denied this tool call."}, {"type": "text", "text": "not today"}]
    assert result.tool_use_id == use.id and result.is_error is True
    assert [block.model_dump() for block in result.content] == denial
    bodies = await requests_of(model, name)
    assert len(bodies) == 2
    assert tool_results(bodies[1]) == [
        {"type": "tool_result", "tool_use_id": use.id, "content": denial, "is_error": True}
    ]
    # a confirmation for a call already answered is refused by the store
    with pytest.raises(anthropic.BadRequestError):
        await send(client, session_id, {"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "allow"})


async def test_always_ask_then_allow_runs_the_call_and_the_model_gets_its_result(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    name = unique("ask-allow")
    await script(
        model,
        name,
        [{"type": "tool_use", "name": "bash", "input": {"command": "echo hi"}}],
        [{"type": "text", "text": "Done."}],
    )
    session_id = await new_session(client, ASK_BASH)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: say hi")
        first = await until_idle(stream)
        use = next(e for e in first if e.type == "agent.tool_use")
        await send(client, session_id, {"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "allow"})
        second = await until_idle(stream, timeout=120)

    assert second[-1].stop_reason.type == "end_turn"
    [result] = [e for e in second if e.type == "agent.tool_result"]
    assert result.tool_use_id == use.id
    bodies = await requests_of(model, name)
    [block] = tool_results(bodies[1])
    assert block["tool_use_id"] == use.id
    # with a sandbox the command ran; without one (no Docker engine here) the model is told why
    expected = [b.model_dump() for b in result.content or []]
    assert block.get("content", []) == expected
    assert block.get("is_error", False) == bool(result.is_error)


async def test_a_disabled_tool_is_answered_with_an_error_the_model_reads(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    name = unique("disabled-tool")
    await script(
        model,
        name,
        [{"type": "tool_use", "name": "bash", "input": {"command": "ls"}}],
        [{"type": "text", "text": "No shell, then."}],
    )
    toolset = {"type": "agent_toolset_20260401", "configs": [{"name": "bash", "enabled": False}]}
    session_id = await new_session(client, toolset)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: list files")
        events = await until_idle(stream)

    assert events[-1].stop_reason.type == "end_turn"
    types = [e.type for e in events]
    assert types[types.index("agent.tool_use") : types.index("agent.tool_use") + 3] == [
        "agent.tool_use",
        "agent.tool_result",
        "span.model_request_end",
    ]
    use = next(e for e in events if e.type == "agent.tool_use")
    result = next(e for e in events if e.type == "agent.tool_result")
    assert use.evaluated_permission == "deny" and use.evaluation is None
    assert result.tool_use_id == use.id and result.is_error is True
    message = result.content[0].text
    assert message.startswith("Tool 'bash' is not enabled for this agent.")
    bodies = await requests_of(model, name)
    assert "bash" not in [t["name"] for t in bodies[0]["tools"]]
    assert tool_results(bodies[1]) == [
        {"type": "tool_result", "tool_use_id": use.id, "content": [{"type": "text", "text": message}], "is_error": True}
    ]


async def test_answering_one_of_two_re_emits_requires_action_with_the_remainder(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    name = unique("partial")
    await script(
        model,
        name,
        [
            {"type": "tool_use", "name": "bash", "input": {"command": "make deploy"}},
            {"type": "tool_use", "name": "lookup", "input": {"q": "approver"}},
        ],
        [{"type": "text", "text": "All answered."}],
    )
    session_id = await new_session(client, ASK_BASH, LOOKUP)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: deploy")
        first = await until_idle(stream)
        use = next(e for e in first if e.type == "agent.tool_use")
        custom = next(e for e in first if e.type == "agent.custom_tool_use")
        assert first[-1].stop_reason.event_ids == [use.id, custom.id]

        await send(client, session_id, {"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "deny"})
        second = await until_idle(stream)
        assert second[-1].stop_reason.type == "requires_action"
        assert second[-1].stop_reason.event_ids == [custom.id]

        await send(
            client,
            session_id,
            {
                "type": "user.custom_tool_result",
                "custom_tool_use_id": custom.id,
                "content": [{"type": "text", "text": "Ada"}],
            },
        )
        third = await until_idle(stream)

    assert third[-1].stop_reason.type == "end_turn"
    bodies = await requests_of(model, name)
    assert len(bodies) == 2
    assert [(b["tool_use_id"], b.get("is_error", False)) for b in tool_results(bodies[1])] == [
        (use.id, True),
        (custom.id, False),
    ]


async def test_an_interrupt_while_waiting_for_the_user_ends_the_turn_and_the_session_goes_on(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    name = unique("interrupt-ask")
    await script(
        model,
        name,
        [{"type": "tool_use", "name": "bash", "input": {"command": "sleep 100"}}],
        [{"type": "text", "text": "Fine, something else."}],
    )
    session_id = await new_session(client, ASK_BASH)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: wait a while")
        first = await until_idle(stream)
        use = next(e for e in first if e.type == "agent.tool_use")

        await send(client, session_id, {"type": "user.interrupt"})
        second = await until_idle(stream)
        assert second[-1].stop_reason.type == "end_turn"
        [result] = [e for e in second if e.type == "agent.tool_result"]
        assert result.tool_use_id == use.id and result.is_error is True
        assert result.content[0].text == "not run: the turn was interrupted"

        await send_text(client, session_id, "do something else")
        third = await until_idle(stream)

    assert third[-1].stop_reason.type == "end_turn"
    assert [e.content[0].text for e in third if e.type == "agent.message"] == ["Fine, something else."]
    history = await all_events(client, session_id)
    assert sum(1 for e in history if e.type == "agent.tool_result") == 1
