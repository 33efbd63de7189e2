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


MCP = {"type": "url", "name": "gh", "url": "https://example.invalid/mcp"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"skills": [{"type": "anthropic", "skill_id": "xlsx"}]}, "skills"),
        ({"skills": [{"type": "custom", "skill_id": "skill_does_not_exist"}]}, "skills"),
        ({"multiagent": {"type": "coordinator", "agents": [{"type": "self"}]}}, "multiagent"),
    ],
    ids=["anthropic-skill", "custom-skill", "multiagent"],
)
def test_features_not_built_yet_are_refused_on_create_and_update_naming_the_field(
    params: dict[str, object], field: str
) -> None:
    with pytest.raises(ApiError) as err:
        make(**params)
    assert (err.value.status, err.value.error_code) == (400, "feature_not_supported")
    assert err.value.message.startswith(f"{field}: ") and "not supported yet" in err.value.message

    agent = make()
    with pytest.raises(ApiError) as err:
        update_agent(agent, AgentUpdateParams.model_validate(params), sent=set(params), now=NOW)  # type: ignore[arg-type]
    assert (err.value.status, err.value.error_code) == (400, "feature_not_supported")
    assert err.value.message.startswith(f"{field}: ")


def test_an_agent_with_an_mcp_server_is_stored_with_its_toolset_resolved_to_always_ask() -> None:
    agent = make(mcp_servers=[MCP], tools=[{"type": "mcp_toolset", "mcp_server_name": "gh"}])
    assert agent.mcp_servers == [MCP]
    assert agent.tools == [
        {
            "type": "mcp_toolset",
            "mcp_server_name": "gh",
            "default_config": {"enabled": True, "permission_policy": {"type": "always_ask"}},
            "configs": [],
        }
    ]


def test_sending_those_fields_empty_is_the_same_as_leaving_them_out() -> None:
    agent = make(mcp_servers=[], skills=[], multiagent=None)
    assert agent.mcp_servers == [] and agent.skills == [] and agent.multiagent is None
    params = AgentUpdateParams.model_validate({"mcp_servers": [], "skills": [], "multiagent": None})
    assert update_agent(agent, params, sent={"mcp_servers", "skills", "multiagent"}, now=NOW) is None  # type: ignore[arg-type]


def test_metadata_a_patch_would_grow_past_sixteen_keys_is_invalid_metadata() -> None:
    agent = make(metadata={f"k{i}": "v" for i in range(16)})
    params = AgentUpdateParams.model_validate({"metadata": {"one_more": "v"}})
    with pytest.raises(ApiError) as err:
        update_agent(agent, params, sent={"metadata"}, now=NOW)  # type: ignore[arg-type]
    assert (err.value.status, err.value.error_code) == (400, "invalid_metadata")
    assert "17 keys" in err.value.message


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
