"""Agent params resolve to the full agent object; updates make versions only when they change something."""

from __future__ import annotations

import pytest

from corral.contracts.api.agents import AgentCreateParams, AgentUpdateParams
from corral.contracts.api.errors import ApiError
from corral.session_store.domain.agents import create_agent, snapshot, update_agent

NOW = "2026-01-01T00:00:00.000000Z"


def make(**params: object) -> object:
    return create_agent(
        AgentCreateParams.model_validate({"name": "a", "model": "claude-sonnet-4-6", **params}),
        agent_id="agent_1",
        now=NOW,
    )


def test_a_bare_model_string_resolves_to_a_model_object_with_default_effort() -> None:
    agent = make()
    assert agent.model.model_dump() == {
        "id": "claude-sonnet-4-6",
        "effort": {"type": "high"},
        "speed": "standard",
        "inference_geo": None,
    }
    assert agent.version == 1
    assert agent.execution_identity == {"type": "service_account"}


def test_the_toolset_resolves_every_builtin_tool_with_per_tool_overrides() -> None:
    agent = make(
        tools=[
            {
                "type": "agent_toolset_20260401",
                "default_config": {"permission_policy": {"type": "always_ask"}},
                "configs": [
                    {"name": "bash", "enabled": False},
                    {"name": "read", "permission_policy": {"type": "always_allow"}},
                ],
            }
        ]
    )
    toolset = agent.tools[0]
    assert toolset["default_config"] == {"enabled": True, "permission_policy": {"type": "always_ask"}}
    by_name = {c["name"]: c for c in toolset["configs"]}
    assert list(by_name) == ["bash", "edit", "read", "write", "glob", "grep", "web_fetch", "web_search"]
    assert by_name["bash"]["enabled"] is False
    assert by_name["bash"]["permission_policy"] == {"type": "always_ask"}
    assert by_name["read"]["permission_policy"] == {"type": "always_allow"}
    assert all(c["type"] == c["name"] for c in toolset["configs"])


def test_an_mcp_server_no_toolset_refers_to_is_rejected() -> None:
    with pytest.raises(ApiError) as err:
        make(mcp_servers=[{"type": "url", "name": "gh", "url": "https://example.invalid/mcp"}])
    assert err.value.status == 400
    assert "'gh'" in err.value.message


def test_an_mcp_toolset_defaults_to_always_ask() -> None:
    agent = make(
        mcp_servers=[{"type": "url", "name": "gh", "url": "https://example.invalid/mcp"}],
        tools=[{"type": "mcp_toolset", "mcp_server_name": "gh"}],
    )
    assert agent.tools[0]["default_config"]["permission_policy"] == {"type": "always_ask"}


def test_an_update_with_a_stale_version_is_a_conflict() -> None:
    agent = make()
    params = AgentUpdateParams.model_validate({"system": "s", "version": 2})
    with pytest.raises(ApiError) as err:
        update_agent(agent, params, sent={"system", "version"}, now=NOW)
    assert err.value.status == 409


def test_an_update_that_changes_nothing_makes_no_new_version() -> None:
    agent = make(system="s")
    assert update_agent(agent, AgentUpdateParams.model_validate({"system": "s"}), sent={"system"}, now=NOW) is None


def test_an_update_bumps_the_version_and_null_clears_a_clearable_field() -> None:
    agent = make(system="s", metadata={"k": "v", "x": "y"})
    params = AgentUpdateParams.model_validate({"system": None, "metadata": {"k": None, "n": "1"}})
    updated = update_agent(agent, params, sent={"system", "metadata"}, now="2026-01-02T00:00:00.000000Z")
    assert updated is not None
    assert updated.version == 2
    assert updated.system is None
    assert updated.metadata == {"x": "y", "n": "1"}
    assert updated.created_at == NOW


def test_name_and_model_cannot_be_cleared() -> None:
    agent = make()
    with pytest.raises(ApiError) as err:
        update_agent(agent, AgentUpdateParams.model_validate({"name": None}), sent={"name"}, now=NOW)
    assert "name" in err.value.message


def test_a_session_snapshot_drops_timestamps_and_metadata() -> None:
    snap = snapshot(make(metadata={"k": "v"}))  # type: ignore[arg-type]
    assert "created_at" not in snap and "metadata" not in snap and "archived_at" not in snap
    assert snap["type"] == "agent" and snap["version"] == 1
