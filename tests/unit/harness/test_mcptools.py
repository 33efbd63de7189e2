"""MCP tools as the model sees them: names, permissions, and the per-session list cache."""

from __future__ import annotations

import asyncio
from typing import Any

from corral.contracts.mcp import CallMcpTool, ListMcpTools, McpTool, McpToolOutcome
from corral.harness.mcp import McpTools
from corral.harness.mcptools import NAME_MAX, model_tool_name, permission
from corral.harness.runstate import TurnState
from corral.harness.tools import ALWAYS_ALLOW, ALWAYS_ASK, AUTO, toolbox

URL = "https://mcp.example.com/mcp"


def agent(*, default: dict[str, Any] | None = None, configs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    toolset: dict[str, Any] = {"type": "mcp_toolset", "mcp_server_name": "docs", "configs": configs or []}
    if default is not None:
        toolset["default_config"] = default
    return {"version": 1, "mcp_servers": [{"type": "url", "name": "docs", "url": URL}], "tools": [toolset]}


LISTING = {"docs": [McpTool(name="search", description="Search."), McpTool(name="fetch")]}


def test_mcp_tools_are_named_by_server_and_tool_and_offered_after_the_others() -> None:
    snapshot = agent()
    snapshot["tools"].append({"type": "custom", "name": "lookup", "description": "x", "input_schema": {}})
    box = toolbox(snapshot, LISTING)

    assert [d["name"] for d in box.definitions] == ["lookup", "mcp__docs__search", "mcp__docs__fetch"]
    assert box.kind("mcp__docs__search") == "mcp"
    entry = box.mcp["mcp__docs__fetch"]
    assert (entry.server, entry.url, entry.tool) == ("docs", URL, "fetch")
    assert box.definitions[1]["description"] == "Search."


def test_without_a_listing_an_mcp_toolset_offers_nothing() -> None:
    assert toolbox(agent()).definitions == ()
    assert toolbox(agent(), {}).kind("mcp__docs__search") == "unknown"


def test_names_the_api_would_refuse_are_made_safe_short_and_still_unique() -> None:
    assert model_tool_name("docs", "search") == "mcp__docs__search"
    odd = model_tool_name("my docs.v2", "search/all")
    assert odd.startswith("mcp__my_docs_v2__search_all_") and len(odd) <= NAME_MAX
    long_a, long_b = model_tool_name("s" * 80, "a"), model_tool_name("s" * 80, "b")
    assert len(long_a) <= NAME_MAX and long_a != long_b
    assert all(c.isalnum() or c in "_-" for c in long_a + odd)


def test_the_default_policy_is_always_ask_and_configs_override_it() -> None:
    assert permission(agent()["tools"][0], "search") == ALWAYS_ASK
    allow = agent(default={"permission_policy": {"type": "always_allow"}})["tools"][0]
    assert permission(allow, "search") == ALWAYS_ALLOW
    per_tool = agent(
        default={"permission_policy": {"type": "always_allow"}},
        configs=[{"name": "fetch", "permission_policy": {"type": "auto"}}, {"name": "search", "enabled": False}],
    )
    assert permission(per_tool["tools"][0], "fetch") == AUTO
    assert permission(per_tool["tools"][0], "search") is None
    assert [d["name"] for d in toolbox(per_tool, LISTING).definitions] == ["mcp__docs__fetch"]
    disabled = agent(default={"enabled": False}, configs=[{"name": "fetch", "enabled": True}])
    assert [d["name"] for d in toolbox(disabled, LISTING).definitions] == ["mcp__docs__fetch"]


class CountingPort:
    def __init__(self) -> None:
        self.lists: list[ListMcpTools] = []

    async def list_tools(self, request: ListMcpTools, *, timeout_s: float) -> list[McpTool]:
        self.lists.append(request)
        return LISTING["docs"]

    async def call_tool(self, request: CallMcpTool, *, timeout_s: float) -> McpToolOutcome:
        raise AssertionError("not called")

    async def close(self, session_id: str, *, timeout_s: float) -> None:
        return None


class FakeRun:
    def __init__(self, session_id: str, snapshot: dict[str, Any]) -> None:
        self.session_id = session_id
        self.turn = TurnState()
        self.log = type(
            "Log", (), {"fold": type("Fold", (), {"session": {"agent": snapshot}, "workspace_id": "wrkspc_unit"})()}
        )()


def test_tool_lists_are_fetched_once_per_session_and_again_for_a_new_agent_version() -> None:
    port = CountingPort()
    tools = McpTools(port, list_timeout_s=1, call_timeout_s=1)

    async def prepare(session_id: str, snapshot: dict[str, Any]) -> None:
        run = FakeRun(session_id, snapshot)
        assert await tools.prepare(run) == []  # type: ignore[arg-type]
        assert run.turn.mcp_tools == LISTING

    async def scenario() -> None:
        await prepare("sesn_a", agent())
        await prepare("sesn_a", agent())
        assert len(port.lists) == 1
        await prepare("sesn_b", agent())
        assert len(port.lists) == 2
        newer = agent()
        newer["version"] = 2
        await prepare("sesn_a", newer)
        assert len(port.lists) == 3
        moved = agent()
        moved["mcp_servers"][0]["url"] = "https://elsewhere.example.com/mcp"
        await prepare("sesn_a", moved)
        assert len(port.lists) == 4

    asyncio.run(scenario())
    assert port.lists[0].url == URL and port.lists[0].server_name == "docs"
    assert port.lists[0].workspace_id == "wrkspc_unit"  # the proxy reads vaults in this workspace only
