"""Agents: request params and the resolved ``agent`` object (managed-agents-api.md section 2)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from corral.contracts.api.base import Metadata, MetadataPatch, NonEmptyName, Request, Resource

EffortLevel = Literal["low", "medium", "high", "xhigh", "max"]
BUILTIN_TOOL_NAMES: tuple[str, ...] = ("bash", "edit", "read", "write", "glob", "grep", "web_fetch", "web_search")
BuiltinToolName = Literal["bash", "edit", "read", "write", "glob", "grep", "web_fetch", "web_search"]


# --- permission policies -------------------------------------------------------------------------
class AlwaysAllow(Request):
    type: Literal["always_allow"]


class AlwaysAsk(Request):
    type: Literal["always_ask"]


class AutoPolicy(Request):
    type: Literal["auto"]


PermissionPolicy = Annotated[AlwaysAllow | AlwaysAsk | AutoPolicy, Field(discriminator="type")]


# --- model -----------------------------------------------------------------------------------------
class EffortParam(Request):
    type: EffortLevel


class ModelConfigParams(Request):
    id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    effort: EffortLevel | EffortParam | None = None
    speed: Literal["standard", "fast"] | None = None
    inference_geo: str | None = None


class Effort(Resource):
    type: EffortLevel


class ModelConfig(Resource):
    id: str
    effort: Effort | None = None
    speed: Literal["standard", "fast"] | None = "standard"
    inference_geo: str | None = None


# --- tools -----------------------------------------------------------------------------------------
class ToolsetDefaultConfigParams(Request):
    enabled: bool | None = None
    permission_policy: PermissionPolicy | None = None


class BuiltinToolConfigParams(Request):
    name: BuiltinToolName
    type: BuiltinToolName | None = None
    enabled: bool | None = None
    permission_policy: PermissionPolicy | None = None
    # web_fetch / web_search extras; kept as given and echoed back.
    allowed_domains: list[str] | None = None
    blocked_domains: list[str] | None = None
    max_content_tokens: int | None = None
    url_sources: dict[str, Any] | None = None
    user_location: dict[str, Any] | None = None


class AgentToolsetParams(Request):
    type: Literal["agent_toolset_20260401"]
    default_config: ToolsetDefaultConfigParams | None = None
    configs: list[BuiltinToolConfigParams] | None = None


class McpToolConfigParams(Request):
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    enabled: bool | None = None
    permission_policy: PermissionPolicy | None = None


class McpToolsetParams(Request):
    type: Literal["mcp_toolset"]
    mcp_server_name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    default_config: ToolsetDefaultConfigParams | None = None
    configs: list[McpToolConfigParams] | None = None


class CustomToolInputSchema(Request):
    type: Literal["object"]
    properties: dict[str, Any] | None = None
    required: list[str] | None = None


class CustomToolParams(Request):
    type: Literal["custom"]
    name: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str
    input_schema: CustomToolInputSchema


ToolParams = Annotated[AgentToolsetParams | McpToolsetParams | CustomToolParams, Field(discriminator="type")]


class McpServerParams(Request):
    type: Literal["url"]
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class SkillParams(Request):
    type: Literal["anthropic", "custom"]
    skill_id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    version: str | None = None


class ServiceAccountIdentity(Request):
    type: Literal["service_account"]


class AwsRoleIdentity(Request):
    type: Literal["aws_role"]
    role_arn: Annotated[str, StringConstraints(min_length=1, max_length=2048)]


ExecutionIdentityParams = Annotated[ServiceAccountIdentity | AwsRoleIdentity, Field(discriminator="type")]


class AgentCreateParams(Request):
    name: NonEmptyName
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)] | ModelConfigParams
    description: str | None = None
    system: str | None = None
    tools: Annotated[list[ToolParams], Field(max_length=256)] | None = None
    mcp_servers: Annotated[list[McpServerParams], Field(max_length=20)] | None = None
    skills: list[SkillParams] | None = None
    metadata: Metadata | None = None
    multiagent: dict[str, Any] | None = None
    execution_identity: ExecutionIdentityParams | None = None


class AgentUpdateParams(Request):
    """Every field optional; absent means keep, and the gateway passes on which fields were sent."""

    name: NonEmptyName | None = None
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)] | ModelConfigParams | None = None
    description: str | None = None
    system: str | None = None
    tools: Annotated[list[ToolParams], Field(max_length=256)] | None = None
    mcp_servers: Annotated[list[McpServerParams], Field(max_length=20)] | None = None
    skills: list[SkillParams] | None = None
    metadata: MetadataPatch | None = None
    multiagent: dict[str, Any] | None = None
    execution_identity: ExecutionIdentityParams | None = None
    version: Annotated[int, Field(ge=1)] | None = None


class AgentRef(Request):
    """``{type: "agent", id, version?}`` as accepted by ``sessions.create``."""

    type: Literal["agent"]
    id: str
    version: Annotated[int, Field(ge=1)] | None = None


class Agent(Resource):
    """The resolved agent object; the same shape is the session's agent snapshot (minus timestamps)."""

    type: Literal["agent"] = "agent"
    id: str
    version: int
    name: str
    description: str | None = None
    system: str | None = None
    model: ModelConfig
    tools: list[dict[str, Any]]
    mcp_servers: list[dict[str, Any]]
    skills: list[dict[str, Any]]
    multiagent: dict[str, Any] | None = None
    execution_identity: dict[str, Any]
    metadata: dict[str, str]
    archived_at: str | None = None
    created_at: str
    updated_at: str
