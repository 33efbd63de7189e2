"""``corral ... apply``'s decision: when is the object on the server already what the file says?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.cli.failure import Failure
from corral.cli.specs import DIGEST_KEY, Spec, create_body, digest_of, load_spec, matches, plan_update

AGENT_YAML = """\
name: reviewer
model: claude-sonnet-4-6
system: |
  Review the diff.
tools:
  - type: agent_toolset_20260401
    configs:
      - name: bash
        permission_policy: {type: always_ask}
metadata:
  team: platform
"""


def spec_of(tmp_path: Path, text: str, kind: str = "agent") -> Spec:
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    return load_spec(path, kind)


def as_served(spec: Spec, **changes: Any) -> dict[str, Any]:
    """The agent as the API answers after ``create_body(spec)``: defaults resolved, the digest kept."""
    served: dict[str, Any] = {
        "id": "agent_01",
        "type": "agent",
        "version": 1,
        "name": spec.fields["name"],
        "description": None,
        "system": spec.fields.get("system"),
        "model": {"id": spec.fields["model"], "effort": {"type": "high"}, "speed": "standard", "inference_geo": None},
        "tools": [
            {
                "type": "agent_toolset_20260401",
                "default_config": {"enabled": True, "permission_policy": {"type": "always_allow"}},
                "configs": [  # the server lists every tool of the toolset, resolved
                    {"name": "bash", "type": "bash", "enabled": True, "permission_policy": {"type": "always_ask"}},
                    {"name": "read", "type": "read", "enabled": True, "permission_policy": {"type": "always_allow"}},
                ],
            }
        ],
        "mcp_servers": [],
        "skills": [],
        "multiagent": None,
        "execution_identity": {"type": "service_account"},
        "metadata": create_body(spec)["metadata"],
        "created_at": "2026-01-01T00:00:00Z",
    }
    served.update(changes)
    return served


def test_an_unchanged_file_against_the_servers_resolved_form_is_unchanged(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, AGENT_YAML)
    plan = plan_update(spec, as_served(spec))
    assert plan.unchanged, plan.changed


def test_key_order_comments_and_yaml_style_do_not_change_the_digest(tmp_path: Path) -> None:
    restyled = (
        "# the reviewer\nmetadata: {team: platform}\nmodel: claude-sonnet-4-6\nname: reviewer\n"
        'system: "Review the diff.\\n"\n'
        "tools: [{type: agent_toolset_20260401, configs: [{permission_policy: {type: always_ask}, name: bash}]}]\n"
    )
    assert spec_of(tmp_path, restyled).digest == spec_of(tmp_path, AGENT_YAML).digest


def test_a_changed_field_is_named_and_sent_with_a_metadata_patch(tmp_path: Path) -> None:
    before = spec_of(tmp_path, AGENT_YAML)
    after = spec_of(tmp_path, AGENT_YAML.replace("Review the diff.", "Review the diff carefully."))
    plan = plan_update(after, as_served(before))
    assert plan.changed == ["system"]
    assert plan.body["system"] == "Review the diff carefully.\n"
    assert plan.body["metadata"] == {DIGEST_KEY: after.digest}
    assert plan.body["tools"] == after.fields["tools"]  # arrays are replaced whole


def test_a_change_made_by_someone_else_on_the_server_is_undone(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, AGENT_YAML)
    edited = as_served(spec, model={"id": "claude-opus-4-8", "effort": None, "speed": "standard"})
    assert plan_update(spec, edited).changed == ["model"]


def test_a_field_left_out_of_the_file_is_compared_with_its_default(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, AGENT_YAML)
    plan = plan_update(spec, as_served(spec, description="set by hand"))
    assert plan.changed == ["description"]
    assert plan.body["description"] == ""


def test_a_nested_key_removed_from_the_file_is_noticed_through_the_digest(tmp_path: Path) -> None:
    """Removing ``default_config`` leaves the server's resolved one "matching": the digest tells."""
    with_default = AGENT_YAML.replace(
        "    configs:", "    default_config: {permission_policy: {type: always_allow}}\n    configs:"
    )
    before = spec_of(tmp_path, with_default)
    after = spec_of(tmp_path, AGENT_YAML)
    plan = plan_update(after, as_served(before))
    assert plan.changed == ["file"]
    assert plan.body["tools"] == after.fields["tools"]


def test_metadata_keys_dropped_from_the_file_are_deleted_and_the_digest_is_kept(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, AGENT_YAML)
    served = as_served(spec, metadata={"team": "platform", "owner": "ana", DIGEST_KEY: spec.digest})
    plan = plan_update(spec, served)
    assert plan.changed == ["metadata"]
    assert plan.body["metadata"] == {"owner": None}


def test_an_agent_made_without_the_cli_is_adopted_once(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, AGENT_YAML)
    served = as_served(spec, metadata={"team": "platform"})
    assert plan_update(spec, served).changed == ["file"]


@pytest.mark.parametrize(
    ("model", "served"),
    [
        ("claude-sonnet-4-6", {"id": "claude-sonnet-4-6", "effort": {"type": "high"}, "speed": "standard"}),
        ({"id": "claude-sonnet-4-6", "effort": "low"}, {"id": "claude-sonnet-4-6", "effort": {"type": "low"}}),
        (
            {"id": "claude-sonnet-4-6", "effort": {"type": "low"}},
            {"id": "claude-sonnet-4-6", "effort": {"type": "low"}},
        ),
    ],
)
def test_model_shorthands_match_the_resolved_model(tmp_path: Path, model: Any, served: dict[str, Any]) -> None:
    spec = spec_of(tmp_path, AGENT_YAML)
    spec = Spec(kind="agent", path=spec.path, fields={**spec.fields, "model": model})
    assert "model" not in plan_update(spec, as_served(spec, model=served)).changed


def test_a_toolset_config_is_compared_with_the_servers_config_of_that_name(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, AGENT_YAML)
    served = as_served(spec)
    served["tools"][0]["configs"].reverse()
    assert plan_update(spec, served).unchanged
    served["tools"][0]["configs"][1]["permission_policy"] = {"type": "always_allow"}  # bash, changed by hand
    assert plan_update(spec, served).changed == ["tools"]


def test_matches_compares_lists_whole_and_booleans_strictly() -> None:
    assert matches([{"a": 1}], [{"a": 1, "b": 2}])
    assert not matches([{"a": 1}], [{"a": 1}, {"a": 2}])
    assert not matches([{"a": 1}, {"a": 2}], [{"a": 2}, {"a": 1}])
    assert not matches(True, 1)
    assert not matches({"a": None}, {})


def test_an_environment_matches_its_resolved_config(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "name: build\nconfig:\n  type: cloud\n  packages: {pip: [pyyaml]}\n", kind="environment")
    served: dict[str, Any] = {
        "name": "build",
        "description": None,
        "config": {
            "type": "cloud",
            "networking": {"type": "unrestricted"},
            "packages": {"type": "packages", "apt": [], "cargo": [], "gem": [], "go": [], "npm": [], "pip": ["pyyaml"]},
        },
        "metadata": {DIGEST_KEY: spec.digest},
    }
    assert plan_update(spec, served).unchanged
    served["config"]["packages"]["pip"] = ["pyyaml", "rich"]
    assert plan_update(spec, served).changed == ["config"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: [unclosed\n", "not valid YAML (line 2"),
        ("- a list\n", "must be a YAML mapping"),
        ("name: x\nmodel: m\nsytem: typo\n", "unknown agent field(s) sytem"),
        ("name: x\n", "needs `model:`"),
        ("name: x\nmodel: m\nmetadata: {n: 1}\n", "`metadata:` must map names to strings"),
        (f"name: x\nmodel: m\nmetadata: {{{DIGEST_KEY}: abc}}\n", "kept by `corral ... apply` itself"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(Failure) as raised:
        spec_of(tmp_path, text)
    assert says in raised.value.message


def test_a_missing_file_is_a_failure_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(Failure) as raised:
        load_spec(tmp_path / "nope.yaml", "agent")
    assert "cannot read" in raised.value.message


def test_the_digest_is_of_content_not_of_spelling() -> None:
    assert digest_of({"a": 1, "b": [1, 2]}) == digest_of({"b": [1, 2], "a": 1})
    assert digest_of({"a": 1}) != digest_of({"a": 2})
