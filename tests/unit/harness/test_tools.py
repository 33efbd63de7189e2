from __future__ import annotations

from typing import Any

import pytest

from corral.harness.tools import ALWAYS_ALLOW, ALWAYS_ASK, AUTO, BUILTIN_DEFINITIONS, Permission, evaluate, toolbox
from tests.unit.harness.fakes import agent_snapshot, custom_tool, toolset

ALL = ["bash", "edit", "read", "write", "glob", "grep", "web_fetch", "web_search"]


def names(agent: dict[str, Any]) -> list[str]:
    return [d["name"] for d in toolbox(agent).definitions]


def test_an_agent_without_tools_offers_none_and_needs_no_sandbox() -> None:
    box = toolbox(agent_snapshot())

    assert box.definitions == ()
    assert not box.needs_sandbox
    assert box.kind("bash") == "unknown"


def test_the_full_toolset_offers_every_builtin_in_the_apis_order_with_its_schema() -> None:
    box = toolbox(agent_snapshot(tools=[toolset()]))

    assert names(agent_snapshot(tools=[toolset()])) == ALL
    assert box.needs_sandbox
    bash, edit, read, write, glob, grep, web_fetch, web_search = box.definitions
    assert bash["input_schema"]["properties"].keys() == {"command", "restart", "timeout_ms"}
    assert "required" not in bash["input_schema"]
    assert edit["input_schema"]["required"] == ["file_path", "old_string", "new_string"]
    assert edit["input_schema"]["properties"].keys() == {"file_path", "old_string", "new_string", "replace_all"}
    assert read["input_schema"]["properties"].keys() == {"file_path", "view_range"}
    assert read["input_schema"]["required"] == ["file_path"]
    assert write["input_schema"]["required"] == ["file_path", "content"]
    assert glob["input_schema"]["properties"].keys() == grep["input_schema"]["properties"].keys() == {"pattern", "path"}
    assert glob["input_schema"]["required"] == grep["input_schema"]["required"] == ["pattern"]
    assert web_fetch["input_schema"]["required"] == ["url"]
    assert web_search["input_schema"]["required"] == ["query"]
    for definition in box.definitions:
        assert set(definition) == {"name", "description", "input_schema"}
        assert definition["input_schema"]["type"] == "object"
        assert len(definition["description"]) > 30


def test_every_builtin_is_allowed_by_default() -> None:
    box = toolbox(agent_snapshot(tools=[toolset()]))

    assert all(box.builtin[name] == ALWAYS_ALLOW for name in ALL)
    assert Permission("allow", {"type": "always_allow"}) == ALWAYS_ALLOW


def test_a_tools_config_overrides_the_default_policy() -> None:
    tools = toolset(default="always_ask", bash={"permission_policy": {"type": "always_allow"}})

    box = toolbox(agent_snapshot(tools=[tools]))

    assert box.builtin["bash"] == ALWAYS_ALLOW
    assert box.builtin["write"] == ALWAYS_ASK == Permission("ask", {"type": "always_ask"})


def test_auto_asks_as_indeterminate() -> None:
    box = toolbox(agent_snapshot(tools=[toolset(read={"permission_policy": {"type": "auto"}})]))

    assert box.builtin["read"] == AUTO
    assert AUTO.evaluated == "ask"
    assert AUTO.evaluation == {
        "type": "auto",
        "evaluated_permission": {"type": "ask", "reason_code": "indeterminate"},
    }


@pytest.mark.parametrize("policy", [None, {}, {"type": "mystery"}, "always_allow"])
def test_an_unreadable_policy_asks_rather_than_allows(policy: object) -> None:
    assert evaluate(policy) == ALWAYS_ASK


def test_disabled_tools_are_not_offered() -> None:
    tools = toolset(bash={"enabled": False}, web_fetch={"enabled": False}, web_search={"enabled": False})

    box = toolbox(agent_snapshot(tools=[tools]))

    assert names(agent_snapshot(tools=[tools])) == ["edit", "read", "write", "glob", "grep"]
    assert box.kind("bash") == "unknown"


def test_a_disabled_toolset_can_enable_single_tools() -> None:
    tools = toolset(enabled=False, read={"enabled": True})

    assert names(agent_snapshot(tools=[tools])) == ["read"]


def test_an_unresolved_toolset_falls_back_to_the_apis_defaults() -> None:
    box = toolbox(agent_snapshot(tools=[{"type": "agent_toolset_20260401"}]))
    assert [d["name"] for d in box.definitions] == ALL
    assert box.builtin["bash"] == ALWAYS_ALLOW

    asking = {"type": "agent_toolset_20260401", "default_config": {"permission_policy": {"type": "always_ask"}}}
    disabled = {"type": "agent_toolset_20260401", "default_config": {"enabled": False}}
    assert toolbox(agent_snapshot(tools=[asking])).builtin["grep"] == ALWAYS_ASK
    assert toolbox(agent_snapshot(tools=[disabled])).definitions == ()


def test_custom_tools_are_offered_as_given_and_need_no_policy() -> None:
    box = toolbox(agent_snapshot(tools=[toolset(), custom_tool("lookup")]))

    assert box.definitions[-1] == {
        "name": "lookup",
        "description": "the client's lookup",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    }
    assert box.kind("lookup") == "custom"
    assert "lookup" not in box.builtin


def test_custom_tools_alone_need_no_sandbox() -> None:
    box = toolbox(agent_snapshot(tools=[custom_tool("a"), custom_tool("b")]))

    assert [d["name"] for d in box.definitions] == ["a", "b"]
    assert not box.needs_sandbox


def test_malformed_entries_are_left_out() -> None:
    tools: list[Any] = [
        "bash",
        {"type": "custom", "name": "no_schema", "description": "x"},
        {"type": "custom", "input_schema": {"type": "object"}},
        {"type": "something_new"},
        custom_tool("ok"),
    ]

    assert names(agent_snapshot(tools=tools)) == ["ok"]
    assert toolbox({"tools": "nope"}).definitions == ()


def test_the_definitions_are_not_shared_with_the_module_table() -> None:
    box = toolbox(agent_snapshot(tools=[toolset()]))

    box.definitions[0]["input_schema"]["properties"].clear()

    assert BUILTIN_DEFINITIONS["bash"]["input_schema"]["properties"]
    assert toolbox(agent_snapshot(tools=[toolset()])).definitions[0]["input_schema"]["properties"]
