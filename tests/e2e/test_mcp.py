"""MCP tools end to end, through the official SDK: an agent whose ``mcp_servers`` names a real MCP
server started by the test (``tests.mcp_server``, the ``mcp`` SDK's server, streamable HTTP on
127.0.0.1, admitted by the stack's credential-proxy with ``CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS``),
and the embedded model scripted to call its tools. The harness lists and calls them through the
credential-proxy; nothing is faked."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import httpx
import pytest

from tests.e2e.conftest import MCP_DOWN_PORT
from tests.e2e.flows import all_events, open_stream, read_until_idle, requests_of, script, send_text, unique
from tests.mcp_server import RunningMcpServer
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

ALLOW = {"permission_policy": {"type": "always_allow"}}


async def mcp_session(
    client: anthropic.AsyncAnthropic, url: str, *, server: str = "calc", default_config: dict[str, Any] | None = None
) -> str:
    toolset: dict[str, Any] = {"type": "mcp_toolset", "mcp_server_name": server}
    if default_config is not None:
        toolset["default_config"] = default_config
    agent = await client.beta.agents.create(
        name=unique("mcp"),
        model="claude-sonnet-4-6",
        mcp_servers=[{"type": "url", "name": server, "url": url}],
        tools=[toolset],  # type: ignore[list-item]
    )
    env = await client.beta.environments.create(name=unique("mcp-env"))
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    return session.id


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in body["messages"][-1]["content"] if b.get("type") == "tool_result"]


def text_of(result: dict[str, Any]) -> str:
    return "".join(block.get("text", "") for block in result.get("content", []))


async def test_an_mcp_tool_call_runs_on_the_server_and_its_result_reaches_the_model(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, mcp_server: RunningMcpServer
) -> None:
    name = unique("mcp-add")
    await script(
        model,
        name,
        [{"type": "tool_use", "name": "mcp__calc__add", "input": {"a": 2, "b": 40}}],
        [{"type": "text", "text": "The sum is 42."}],
    )
    session_id = await mcp_session(client, mcp_server.url, default_config=ALLOW)
    before = mcp_server.calls.get("add", 0)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: add 2 and 40")
        seen = await read_until_idle(stream)

    use = next(e for e in seen if e.type == "agent.mcp_tool_use")
    assert (use.mcp_server_name, use.name, use.input) == ("calc", "add", {"a": 2, "b": 40})
    assert use.evaluated_permission == "allow"
    result = next(e for e in seen if e.type == "agent.mcp_tool_result")
    assert result.mcp_tool_use_id == use.id and not result.is_error
    assert [block.text for block in result.content] == ["42"]
    assert seen[-1].stop_reason.type == "end_turn"
    assert mcp_server.calls["add"] == before + 1

    bodies = await requests_of(model, name)
    offered = {tool["name"]: tool for tool in bodies[0]["tools"]}
    assert set(offered) == {"mcp__calc__add", "mcp__calc__echo", "mcp__calc__hang"}
    assert offered["mcp__calc__add"]["input_schema"]["required"] == ["a", "b"]
    assert bodies[1]["messages"][-2]["content"][-1] == {
        "type": "tool_use",
        "id": use.id,
        "name": "mcp__calc__add",
        "input": {"a": 2, "b": 40},
    }
    assert [text_of(r) for r in tool_results(bodies[1])] == ["42"]


async def test_mcp_tools_ask_by_default_and_allow_runs_the_call(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, mcp_server: RunningMcpServer
) -> None:
    name = unique("mcp-ask-allow")
    await script(
        model,
        name,
        [{"type": "tool_use", "name": "mcp__calc__echo", "input": {"text": "confirmed"}}],
        [{"type": "text", "text": "Done."}],
    )
    session_id = await mcp_session(client, mcp_server.url)
    before = mcp_server.calls.get("echo", 0)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: echo")
        first = await read_until_idle(stream, any_idle=True)
        use = next(e for e in first if e.type == "agent.mcp_tool_use")
        assert use.evaluated_permission == "ask"
        assert use.evaluation is not None and use.evaluation.type == "always_ask"
        assert first[-1].stop_reason.type == "requires_action"
        assert first[-1].stop_reason.event_ids == [use.id]
        assert not any(e.type == "agent.mcp_tool_result" for e in first)
        assert mcp_server.calls.get("echo", 0) == before

        await client.beta.sessions.events.send(
            session_id, events=[{"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "allow"}]
        )
        second = await read_until_idle(stream)

    result = next(e for e in second if e.type == "agent.mcp_tool_result")
    assert result.mcp_tool_use_id == use.id and not result.is_error
    assert [block.text for block in result.content] == ["confirmed"]
    assert mcp_server.calls["echo"] == before + 1
    assert [text_of(r) for r in tool_results((await requests_of(model, name))[1])] == ["confirmed"]


async def test_a_denied_mcp_call_does_not_run_and_the_model_is_told(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, mcp_server: RunningMcpServer
) -> None:
    name = unique("mcp-ask-deny")
    await script(
        model,
        name,
        [{"type": "tool_use", "name": "mcp__calc__echo", "input": {"text": "never"}}],
        [{"type": "text", "text": "Understood."}],
    )
    session_id = await mcp_session(client, mcp_server.url)
    before = mcp_server.calls.get("echo", 0)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: echo")
        first = await read_until_idle(stream, any_idle=True)
        use = next(e for e in first if e.type == "agent.mcp_tool_use")
        await client.beta.sessions.events.send(
            session_id,
            events=[
                {
                    "type": "user.tool_confirmation",
                    "tool_use_id": use.id,
                    "result": "deny",
                    "deny_message": "not that one",
                }
            ],
        )
        second = await read_until_idle(stream)

    result = next(e for e in second if e.type == "agent.mcp_tool_result")
    assert result.mcp_tool_use_id == use.id and result.is_error
    assert "not that one" in "".join(block.text for block in result.content)
    assert second[-1].stop_reason.type == "end_turn"
    assert mcp_server.calls.get("echo", 0) == before
    told = tool_results((await requests_of(model, name))[1])
    assert told[0]["is_error"] is True and "not that one" in text_of(told[0])


async def test_a_server_that_is_down_is_a_session_error_and_the_turn_goes_on_without_its_tools(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    name = unique("mcp-down")
    await script(model, name, [{"type": "text", "text": "No tools today."}])
    session_id = await mcp_session(client, f"http://127.0.0.1:{MCP_DOWN_PORT}/mcp", server="gone")
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: hello")
        seen = await read_until_idle(stream)

    errors = [e for e in seen if e.type == "session.error"]
    assert len(errors) == 1, [e.type for e in seen]
    error = errors[0].error
    assert error.type == "mcp_connection_failed_error"
    assert error.mcp_server_name == "gone"
    assert f"127.0.0.1:{MCP_DOWN_PORT}" in error.message
    assert seen[-1].stop_reason.type == "end_turn"
    bodies = await requests_of(model, name)
    assert not [t for t in bodies[0].get("tools", []) if t["name"].startswith("mcp__")]


async def test_a_loopback_server_the_operator_did_not_admit_is_refused(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, mcp_server: RunningMcpServer
) -> None:
    name = unique("mcp-loopback")
    await script(model, name, [{"type": "text", "text": "Fine."}])
    # the same server, named by a host the operator did not admit: it resolves to loopback
    session_id = await mcp_session(client, f"http://localhost:{mcp_server.port}/mcp", server="local")
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: hello")
        seen = await read_until_idle(stream)

    error = next(e for e in seen if e.type == "session.error").error
    assert (error.type, error.mcp_server_name) == ("mcp_connection_failed_error", "local")
    assert "loopback" in error.message and "CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS" in error.message
    assert seen[-1].stop_reason.type == "end_turn"


async def test_an_interrupt_ends_a_turn_whose_mcp_tool_hangs(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, mcp_server: RunningMcpServer
) -> None:
    name = unique("mcp-hang")
    await script(
        model,
        name,
        [{"type": "tool_use", "name": "mcp__calc__hang", "input": {}}],
        [{"type": "text", "text": "never asked"}],
    )
    session_id = await mcp_session(client, mcp_server.url, default_config=ALLOW)
    hanging = mcp_server.hanging
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: hang")

        async def started() -> bool:
            return mcp_server.hanging > hanging

        await eventually(started, timeout=30)
        await client.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])
        async with asyncio.timeout(10):  # a liveness bound: the call would hang for ever
            seen = await read_until_idle(stream)

    assert seen[-1].stop_reason.type == "end_turn"
    result = next(e for e in seen if e.type == "agent.mcp_tool_result")
    assert result.is_error and "interrupted" in "".join(block.text for block in result.content)
    assert len(await requests_of(model, name)) == 1  # the model was not asked again
    kinds = [e.type for e in await all_events(client, session_id)]
    assert kinds.count("agent.mcp_tool_use") == kinds.count("agent.mcp_tool_result") == 1


async def test_a_server_that_speaks_only_the_older_sse_transport_is_reached_over_it(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, mcp_server: RunningMcpServer
) -> None:
    name = unique("mcp-sse")
    await script(
        model,
        name,
        [{"type": "tool_use", "name": "mcp__legacy__add", "input": {"a": 19, "b": 23}}],
        [{"type": "text", "text": "Forty-two."}],
    )
    tag = unique("sse")
    session_id = await mcp_session(client, f"{mcp_server.legacy_url}?t={tag}", server="legacy", default_config=ALLOW)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: add")
        seen = await read_until_idle(stream)

    assert not [e for e in seen if e.type == "session.error"], seen
    [result] = [e for e in seen if e.type == "agent.mcp_tool_result"]
    assert (result.is_error, [b.text for b in result.content]) == (False, ["42"])
    mine = [(method, path) for method, path, query in mcp_server.requests if tag in query]
    # streamable HTTP was tried first (the SSE-only server answers its POST 405), then the SSE transport:
    # an event stream, and the messages posted to the endpoint it named
    assert mine[0] == ("POST", "/legacy/sse"), mine
    assert ("GET", "/legacy/sse") in mine
    posted = [query for method, path, query in mcp_server.requests if (method, path) == ("POST", "/legacy/messages/")]
    assert posted, mcp_server.requests[-10:]


async def test_archiving_a_session_closes_its_mcp_connection_at_the_server(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, mcp_server: RunningMcpServer
) -> None:
    name = unique("mcp-archive")
    await script(
        model,
        name,
        [{"type": "tool_use", "name": "mcp__calc__add", "input": {"a": 1, "b": 1}}],
        [{"type": "text", "text": "Two."}],
    )
    tag = unique("archive")
    session_id = await mcp_session(client, f"{mcp_server.url}?t={tag}", default_config=ALLOW)
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: add")
        seen = await read_until_idle(stream)
    assert [b.text for e in seen if e.type == "agent.mcp_tool_result" for b in e.content] == ["2"], seen

    def ended() -> list[str]:
        """The MCP sessions the client ended (streamable HTTP: a DELETE) on this session's connection."""
        return [query for method, _, query in mcp_server.requests if method == "DELETE" and tag in query]

    assert ended() == []  # the connection is kept while the session lives (idle timeout: minutes)
    await client.beta.sessions.archive(session_id)

    async def closed() -> bool:
        return len(ended()) == 1

    await eventually(closed, timeout=20)  # a liveness bound, far below the idle timeout
