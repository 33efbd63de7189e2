"""Sessions (managed-agents-api.md section 4)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from corral.contracts.api.agents import AgentRef, McpServerParams, ModelConfigParams, SkillParams, ToolParams
from corral.contracts.api.base import Metadata, MetadataPatch, Request, Resource
from corral.contracts.api.event_params import InitialEventParams

SessionStatus = Literal["idle", "running", "rescheduling", "terminated"]
SESSION_STATUSES: tuple[str, ...] = ("idle", "running", "rescheduling", "terminated")


class AgentWithOverrides(Request):
    type: Literal["agent_with_overrides"]
    id: str
    version: Annotated[int, Field(ge=1)] | None = None
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)] | ModelConfigParams | None = None
    system: str | None = None
    tools: list[ToolParams] | None = None
    mcp_servers: list[McpServerParams] | None = None
    skills: list[SkillParams] | None = None


class MaxListCost(Request):
    amount: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,15}$")]
    currency: Literal["USD"]


class BudgetParams(Request):
    type: Literal["limit"]
    max_list_cost: MaxListCost


class SessionCreateParams(Request):
    agent: Annotated[str, StringConstraints(min_length=1)] | AgentRef | AgentWithOverrides
    environment_id: Annotated[str, StringConstraints(min_length=1)]
    title: str | None = None
    metadata: Metadata | None = None
    resources: list[dict[str, Any]] | None = None
    initial_events: Annotated[list[InitialEventParams], Field(max_length=50)] | None = None
    vault_ids: list[str] | None = None
    budget: BudgetParams | None = None


class SessionAgentUpdate(Request):
    tools: list[ToolParams] | None = None
    mcp_servers: list[McpServerParams] | None = None


class SessionUpdateParams(Request):
    title: str | None = None
    metadata: MetadataPatch | None = None
    agent: SessionAgentUpdate | None = None
    budget: BudgetParams | None = None
    vault_ids: list[str] | None = None


class CacheCreation(Resource):
    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0


class SessionUsage(Resource):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation: CacheCreation = Field(default_factory=CacheCreation)
    active_seconds: float = 0.0
    list_cost: dict[str, str] | None = None
    """Tracked for sessions with a budget: the list cost the newest ``session.usage`` event showed."""


class SessionStats(Resource):
    active_seconds: float = 0.0
    duration_seconds: float = 0.0


class Session(Resource):
    type: Literal["session"] = "session"
    id: str
    status: SessionStatus
    title: str | None = None
    environment_id: str
    agent: dict[str, Any]
    resources: list[dict[str, Any]] = Field(default_factory=list)
    vault_ids: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    outcome_evaluations: list[dict[str, Any]] = Field(default_factory=list)
    budget: dict[str, Any] | None = None
    deployment_id: str | None = None
    stats: SessionStats = Field(default_factory=SessionStats)
    usage: SessionUsage = Field(default_factory=SessionUsage)
    archived_at: str | None = None
    created_at: str
    updated_at: str
