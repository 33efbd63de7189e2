"""Resolving agent params into the stored ``agent`` object, and applying updates. Pure functions."""

from __future__ import annotations

from typing import Any

from corral.contracts.api.agents import (
    BUILTIN_TOOL_NAMES,
    Agent,
    AgentCreateParams,
    AgentToolsetParams,
    AgentUpdateParams,
    BuiltinToolConfigParams,
    CustomToolParams,
    McpServerParams,
    McpToolsetParams,
    ModelConfig,
    ModelConfigParams,
    SkillParams,
    ToolParams,
)
from corral.contracts.api.base import apply_metadata_patch
from corral.contracts.api.errors import ApiError, conflict, invalid
from corral.session_store.domain.unsupported import reject_unbuilt_agent_fields

DEFAULT_EFFORT = "high"
_ALLOW = {"type": "always_allow"}
_ASK = {"type": "always_ask"}
_WEB_EXTRAS = ("allowed_domains", "blocked_domains", "max_content_tokens", "url_sources", "user_location")


def resolve_model(model: str | ModelConfigParams) -> ModelConfig:
    if isinstance(model, str):
        return ModelConfig.model_validate({"id": model, "effort": {"type": DEFAULT_EFFORT}, "speed": "standard"})
    effort = model.effort
    level = effort if isinstance(effort, str) else (effort.type if effort else DEFAULT_EFFORT)
    return ModelConfig.model_validate(
        {
            "id": model.id,
            "effort": {"type": level},
            "speed": model.speed or "standard",
            "inference_geo": model.inference_geo,
        }
    )


def _policy(value: Any, default: dict[str, str]) -> dict[str, str]:
    return value.model_dump(mode="json") if value is not None else dict(default)


def _resolve_toolset(params: AgentToolsetParams) -> dict[str, Any]:
    default_enabled = True
    default_policy = dict(_ALLOW)
    if params.default_config is not None:
        if params.default_config.enabled is not None:
            default_enabled = params.default_config.enabled
        default_policy = _policy(params.default_config.permission_policy, _ALLOW)
    given: dict[str, BuiltinToolConfigParams] = {}
    for given_cfg in params.configs or []:
        if given_cfg.type is not None and given_cfg.type != given_cfg.name:
            raise invalid(
                f"tools: config for {given_cfg.name!r} has type {given_cfg.type!r}; type and name must be equal"
            )
        if given_cfg.name in given:
            raise invalid(f"tools: the agent toolset configures {given_cfg.name!r} twice")
        given[given_cfg.name] = given_cfg
    configs = []
    for name in BUILTIN_TOOL_NAMES:
        cfg = given.get(name)
        resolved: dict[str, Any] = {
            "type": name,
            "name": name,
            "enabled": cfg.enabled if cfg is not None and cfg.enabled is not None else default_enabled,
            "permission_policy": _policy(cfg.permission_policy if cfg else None, default_policy),
        }
        if cfg is not None:
            for extra in _WEB_EXTRAS:
                value = getattr(cfg, extra)
                if value is not None:
                    if name not in ("web_fetch", "web_search"):
                        raise invalid(f"tools: {extra!r} applies only to web_fetch and web_search, not {name!r}")
                    resolved[extra] = value
        configs.append(resolved)
    return {
        "type": params.type,
        "default_config": {"enabled": default_enabled, "permission_policy": default_policy},
        "configs": configs,
    }


def _resolve_mcp_toolset(params: McpToolsetParams) -> dict[str, Any]:
    default_enabled = True
    default_policy = dict(_ASK)
    if params.default_config is not None:
        if params.default_config.enabled is not None:
            default_enabled = params.default_config.enabled
        default_policy = _policy(params.default_config.permission_policy, _ASK)
    configs = [
        {
            "name": cfg.name,
            "enabled": cfg.enabled if cfg.enabled is not None else default_enabled,
            "permission_policy": _policy(cfg.permission_policy, default_policy),
        }
        for cfg in params.configs or []
    ]
    return {
        "type": params.type,
        "mcp_server_name": params.mcp_server_name,
        "default_config": {"enabled": default_enabled, "permission_policy": default_policy},
        "configs": configs,
    }


def resolve_tools(tools: list[ToolParams], mcp_servers: list[McpServerParams]) -> list[dict[str, Any]]:
    """Resolve every toolset to its full form and check the cross-references the API requires."""
    server_names = [s.name for s in mcp_servers]
    if len(set(server_names)) != len(server_names):
        raise invalid("mcp_servers: server names must be unique")
    resolved: list[dict[str, Any]] = []
    seen_toolset = False
    referenced: set[str] = set()
    custom_names: set[str] = set()
    for tool in tools:
        if isinstance(tool, AgentToolsetParams):
            if seen_toolset:
                raise invalid("tools: agent_toolset_20260401 may appear only once")
            seen_toolset = True
            resolved.append(_resolve_toolset(tool))
        elif isinstance(tool, McpToolsetParams):
            if tool.mcp_server_name not in server_names:
                raise invalid(
                    f"tools: mcp_toolset refers to MCP server {tool.mcp_server_name!r}, which is not in mcp_servers"
                )
            if tool.mcp_server_name in referenced:
                raise invalid(f"tools: MCP server {tool.mcp_server_name!r} has more than one mcp_toolset")
            referenced.add(tool.mcp_server_name)
            resolved.append(_resolve_mcp_toolset(tool))
        elif isinstance(tool, CustomToolParams):
            if tool.name in custom_names or tool.name in BUILTIN_TOOL_NAMES:
                raise invalid(f"tools: custom tool name {tool.name!r} is already used")
            custom_names.add(tool.name)
            resolved.append(tool.model_dump(mode="json", exclude_none=True))
    unreferenced = [n for n in server_names if n not in referenced]
    if unreferenced:
        raise invalid(f"mcp_servers: {unreferenced[0]!r} is not referenced by any mcp_toolset in tools")
    return resolved


def _resolve_skills(skills: list[SkillParams]) -> list[dict[str, Any]]:
    return [{"type": s.type, "skill_id": s.skill_id, "version": s.version or "latest"} for s in skills]


def create_agent(params: AgentCreateParams, *, agent_id: str, now: str) -> Agent:
    reject_unbuilt_agent_fields(params.model_dump(mode="json", exclude_unset=True))
    mcp_servers = params.mcp_servers or []
    return Agent(
        id=agent_id,
        version=1,
        name=params.name,
        description=params.description,
        system=params.system,
        model=resolve_model(params.model),
        tools=resolve_tools(params.tools or [], mcp_servers),
        mcp_servers=[s.model_dump(mode="json") for s in mcp_servers],
        skills=_resolve_skills(params.skills or []),
        multiagent=params.multiagent,
        execution_identity=(
            params.execution_identity.model_dump(mode="json")
            if params.execution_identity
            else {"type": "service_account"}
        ),
        metadata=dict(params.metadata or {}),
        created_at=now,
        updated_at=now,
    )


def update_agent(current: Agent, params: AgentUpdateParams, *, sent: set[str], now: str) -> Agent | None:
    """The next version, or ``None`` when the update changes nothing (no new version then).

    ``sent`` names the fields the client actually sent (absent = keep; null = clear where allowed).
    """
    if current.archived_at is not None:
        raise conflict(f"agent {current.id!r} is archived and can no longer be updated", error_code="agent_archived")
    if "version" in sent and params.version is not None and params.version != current.version:
        raise conflict(
            f"agent {current.id!r} is at version {current.version}, not {params.version}; "
            "retrieve it again and reapply your change",
            error_code="agent_version_mismatch",
        )
    for field in ("name", "model"):
        if field in sent and getattr(params, field) is None:
            raise invalid(f"{field}: cannot be cleared")
    reject_unbuilt_agent_fields(params.model_dump(mode="json", include=sent))
    data = current.model_dump(mode="json")
    if "name" in sent:
        data["name"] = params.name
    if "description" in sent:
        data["description"] = params.description or None
    if "system" in sent:
        data["system"] = params.system or None
    if "model" in sent and params.model is not None:
        data["model"] = resolve_model(params.model).model_dump(mode="json")
    mcp_servers = current_servers = [McpServerParams.model_validate(s) for s in current.mcp_servers]
    if "mcp_servers" in sent:
        mcp_servers = params.mcp_servers or []
        data["mcp_servers"] = [s.model_dump(mode="json") for s in mcp_servers]
    if "tools" in sent:
        data["tools"] = resolve_tools(params.tools or [], mcp_servers)
    elif mcp_servers is not current_servers:
        data["tools"] = _recheck_tools(current.tools, mcp_servers)
    if "skills" in sent:
        data["skills"] = _resolve_skills(params.skills or [])
    if "multiagent" in sent:
        data["multiagent"] = params.multiagent
    if "execution_identity" in sent:
        data["execution_identity"] = (
            params.execution_identity.model_dump(mode="json")
            if params.execution_identity
            else {"type": "service_account"}
        )
    if "metadata" in sent:
        data["metadata"] = apply_metadata_patch(current.metadata, params.metadata or {})
    if data == current.model_dump(mode="json"):
        return None
    data["version"] = current.version + 1
    data["updated_at"] = now
    return Agent.model_validate(data)


def _recheck_tools(tools: list[dict[str, Any]], mcp_servers: list[McpServerParams]) -> list[dict[str, Any]]:
    names = {s.name for s in mcp_servers}
    referenced = {t["mcp_server_name"] for t in tools if t.get("type") == "mcp_toolset"}
    if referenced - names:
        raise invalid(f"mcp_servers: tools still refer to {sorted(referenced - names)[0]!r}; update tools too")
    if names - referenced:
        raise invalid(f"mcp_servers: {sorted(names - referenced)[0]!r} is not referenced by any mcp_toolset in tools")
    return tools


def snapshot(agent: Agent) -> dict[str, Any]:
    """The agent as a session pins it: the agent object without timestamps, metadata or archive mark."""
    return agent.model_dump(mode="json", exclude={"metadata", "archived_at", "created_at", "updated_at"})


def reject_archived(agent: Agent) -> None:
    if agent.archived_at is not None:
        raise ApiError(
            "invalid_request_error",
            f"agent {agent.id!r} is archived; archived agents cannot be used by new sessions",
            error_code="agent_archived",
        )
