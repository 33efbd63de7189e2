"""Session events: everything the session log holds (section 5 and 6); what clients send is in
``corral.contracts.api.event_params``.

One model per event type, each with a ``type`` literal (their content blocks are in
``corral.contracts.api.content``); ``SessionEvent`` is their discriminated
union and ``parse_event`` loads any stored event. Stream-only frames (``event_start``,
``event_delta``, ``session.deleted``) live in ``corral.contracts.api.stream``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from corral.contracts.api.base import Resource

# Re-exported: the harness reads these blocks from this module.
from corral.contracts.api.content import DocumentBlock as DocumentBlock
from corral.contracts.api.content import ImageBlock as ImageBlock
from corral.contracts.api.content import SearchResultBlock as SearchResultBlock

# --- stored events -----------------------------------------------------------------------------------


class StoredEvent(Resource):
    """Fields every event in the log carries."""

    id: str
    processed_at: str | None = None


class UserMessage(StoredEvent):
    type: Literal["user.message"] = "user.message"
    content: list[dict[str, Any]]


class UserInterrupt(StoredEvent):
    type: Literal["user.interrupt"] = "user.interrupt"
    session_thread_id: str | None = None


class UserToolConfirmation(StoredEvent):
    type: Literal["user.tool_confirmation"] = "user.tool_confirmation"
    tool_use_id: str
    result: Literal["allow", "deny"]
    deny_message: str | None = None
    session_thread_id: str | None = None


class UserCustomToolResult(StoredEvent):
    type: Literal["user.custom_tool_result"] = "user.custom_tool_result"
    custom_tool_use_id: str
    content: list[dict[str, Any]] | None = None
    is_error: bool | None = None
    session_thread_id: str | None = None


class UserToolResult(StoredEvent):
    type: Literal["user.tool_result"] = "user.tool_result"
    tool_use_id: str
    content: list[dict[str, Any]] | None = None
    is_error: bool | None = None
    session_thread_id: str | None = None


class AgentMessage(StoredEvent):
    type: Literal["agent.message"] = "agent.message"
    content: list[dict[str, Any]]


class AgentThinking(StoredEvent):
    type: Literal["agent.thinking"] = "agent.thinking"


class AgentToolUse(StoredEvent):
    type: Literal["agent.tool_use"] = "agent.tool_use"
    name: str
    input: dict[str, Any]
    evaluated_permission: Literal["allow", "ask", "deny"] | None = None
    evaluation: dict[str, Any] | None = None
    session_thread_id: str | None = None


class AgentToolResult(StoredEvent):
    type: Literal["agent.tool_result"] = "agent.tool_result"
    tool_use_id: str
    content: list[dict[str, Any]] | None = None
    is_error: bool | None = None


class AgentCustomToolUse(StoredEvent):
    type: Literal["agent.custom_tool_use"] = "agent.custom_tool_use"
    name: str
    input: dict[str, Any]
    session_thread_id: str | None = None


class AgentMcpToolUse(StoredEvent):
    """A call of a tool of one of the agent's MCP servers: ``name`` is the tool's name on the server."""

    type: Literal["agent.mcp_tool_use"] = "agent.mcp_tool_use"
    mcp_server_name: str
    name: str
    input: dict[str, Any]
    evaluated_permission: Literal["allow", "ask", "deny"] | None = None
    evaluation: dict[str, Any] | None = None
    session_thread_id: str | None = None


class AgentMcpToolResult(StoredEvent):
    type: Literal["agent.mcp_tool_result"] = "agent.mcp_tool_result"
    mcp_tool_use_id: str
    content: list[dict[str, Any]] | None = None
    is_error: bool | None = None


class ModelUsage(Resource):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    speed: Literal["standard", "fast"] | None = None


class SpanModelRequestStart(StoredEvent):
    type: Literal["span.model_request_start"] = "span.model_request_start"
    corral_trace_id: str | None = None
    """Corral's addition: the OpenTelemetry trace (32 hex digits) of the turn that made this model
    request, as Jaeger shows it; absent when the harness was not in a trace. Clients that do not know
    it ignore it (the ``anthropic`` SDK keeps unknown fields as extras)."""


class SpanModelRequestEnd(StoredEvent):
    type: Literal["span.model_request_end"] = "span.model_request_end"
    model_request_start_id: str
    model_usage: ModelUsage
    is_error: bool | None = None
    corral_trace_id: str | None = None
    """As on ``span.model_request_start``."""


class SessionStatusRunning(StoredEvent):
    type: Literal["session.status_running"] = "session.status_running"


class SessionStatusRescheduled(StoredEvent):
    type: Literal["session.status_rescheduled"] = "session.status_rescheduled"


class SessionStatusTerminated(StoredEvent):
    type: Literal["session.status_terminated"] = "session.status_terminated"


StopReasonType = Literal["end_turn", "requires_action", "retries_exhausted", "budget_reached", "refusal"]


class StopReason(Resource):
    type: StopReasonType
    event_ids: list[str] | None = None


class SessionStatusIdle(StoredEvent):
    type: Literal["session.status_idle"] = "session.status_idle"
    stop_reason: StopReason
    stop_details: dict[str, Any] | None = None


RetryStatus = Literal["retrying", "exhausted", "terminal"]
SessionErrorType = Literal[
    "unknown_error",
    "model_overloaded_error",
    "model_rate_limited_error",
    "model_request_failed_error",
    "mcp_connection_failed_error",
    "mcp_authentication_failed_error",
    "billing_error",
    "credential_host_unreachable_error",
    "tool_use_limit_reached_error",
    "compaction_limit_reached_error",
    "repository_authentication_error",
    "repository_forbidden_error",
    "repository_not_found_error",
    "repository_checkout_error",
    "repository_clone_error",
]


class RetryStatusObj(Resource):
    type: RetryStatus


class SessionErrorBody(Resource):
    type: SessionErrorType
    message: str
    retry_status: RetryStatusObj
    repository_url: str | None = None
    """Set for the ``repository_*_error`` types: the repository the error is about."""
    mcp_server_name: str | None = None
    """Set for ``mcp_connection_failed_error`` and ``mcp_authentication_failed_error``."""
    credential_id: str | None = None
    """Set for ``credential_host_unreachable_error``: the ``environment_variable`` credential."""
    vault_id: str | None = None
    """Set for ``credential_host_unreachable_error``: the vault holding the credential."""


class SessionError(StoredEvent):
    type: Literal["session.error"] = "session.error"
    error: SessionErrorBody


class CompactionDetails(Resource):
    """Corral's record of what a compaction did (not part of the public API's event shape).

    ``cleared_tool_results``: ids of ``agent.tool_result`` / ``user.custom_tool_result`` events whose
    content the conversation now shows as a note (the log keeps them whole). ``summarized_through``:
    the id of the last event the ``summary`` replaces; the conversation starts with the summary and
    goes on with the events after that one.
    """

    cleared_tool_results: list[str] = Field(default_factory=list)
    summarized_through: str | None = None
    summary: str | None = None
    summary_usage: ModelUsage | None = None
    """The tokens the summary request used (they count toward the session's usage and budget)."""


class AgentThreadContextCompacted(StoredEvent):
    """The public event (``id``, ``type``, ``processed_at``) plus ``corral_compaction``, an extra field
    API clients ignore (the SDK keeps unknown fields), from which any harness rebuilds the compacted
    conversation."""

    type: Literal["agent.thread_context_compacted"] = "agent.thread_context_compacted"
    corral_compaction: CompactionDetails | None = None


class SessionUpdated(StoredEvent):
    """Only the fields that changed are present (``title`` and ``budget`` may be present as null)."""

    type: Literal["session.updated"] = "session.updated"
    agent: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    title: str | None = None
    budget: dict[str, Any] | None = None
    #: The session's resources, whole, when one changed (a repository's token rotated: its ``updated_at``).
    resources: list[dict[str, Any]] | None = None


class MonetaryAmount(Resource):
    """``amount`` in minor units of ``currency`` (cents), an integer as a string: "2500" is $25.00."""

    amount: str
    currency: Literal["USD"] = "USD"


class UsageSnapshot(Resource):
    """The session's cumulative usage when a ``session.usage`` event was logged."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation: dict[str, int] | None = None
    list_cost: MonetaryAmount | None = None


class SessionUsageEvent(StoredEvent):
    """A snapshot of the session's cumulative usage and tracked list cost, with its budget then."""

    type: Literal["session.usage"] = "session.usage"
    usage: UsageSnapshot
    budget: dict[str, Any] | None = None


SessionEvent = Annotated[
    UserMessage
    | UserInterrupt
    | UserToolConfirmation
    | UserCustomToolResult
    | UserToolResult
    | AgentMessage
    | AgentThinking
    | AgentToolUse
    | AgentToolResult
    | AgentCustomToolUse
    | AgentMcpToolUse
    | AgentMcpToolResult
    | AgentThreadContextCompacted
    | SpanModelRequestStart
    | SpanModelRequestEnd
    | SessionStatusRunning
    | SessionStatusRescheduled
    | SessionStatusTerminated
    | SessionStatusIdle
    | SessionError
    | SessionUpdated
    | SessionUsageEvent,
    Field(discriminator="type"),
]

SESSION_EVENT_ADAPTER: TypeAdapter[SessionEvent] = TypeAdapter(SessionEvent)

HarnessEvent = (
    AgentMessage
    | AgentToolUse
    | AgentCustomToolUse
    | AgentToolResult
    | AgentMcpToolUse
    | AgentMcpToolResult
    | AgentThreadContextCompacted
    | SpanModelRequestStart
    | SpanModelRequestEnd
    | SessionStatusRunning
    | SessionStatusRescheduled
    | SessionStatusIdle
    | SessionError
    | SessionUsageEvent
)
"""The events the harness appends (``rpc.AppendEvents`` with ``origin="harness"``), as the typed
models it builds them with; they are serialised once, where the append is sent."""

#: Every public event type name the list endpoint's ``types[]`` filter accepts.
EVENT_TYPES: frozenset[str] = frozenset(
    {
        "user.message", "user.interrupt", "user.tool_confirmation", "user.custom_tool_result",
        "user.tool_result", "user.define_outcome", "system.message",
        "agent.message", "agent.thinking", "agent.tool_use", "agent.tool_result", "agent.mcp_tool_use",
        "agent.mcp_tool_result", "agent.custom_tool_use", "agent.thread_message_sent",
        "agent.thread_message_received", "agent.thread_context_compacted",
        "session.status_running", "session.status_rescheduled", "session.status_terminated",
        "session.status_idle", "session.error", "session.updated", "session.usage",
        "session.thread_created", "session.thread_status_running", "session.thread_status_rescheduled",
        "session.thread_status_terminated", "session.thread_status_idle",
        "span.model_request_start", "span.model_request_end", "span.outcome_evaluation_start",
        "span.outcome_evaluation_ongoing", "span.outcome_evaluation_end",
        "workflow_run.created", "workflow_run.status_running", "workflow_run.status_idle",
        "workflow_run.phase_started", "workflow_run.phase_ended", "workflow_run.error",
        "workflow_run.status_ended",
    }
)  # fmt: skip


def parse_event(data: bytes | str | dict[str, Any]) -> SessionEvent:
    """Load a stored event (JSON bytes, text or an already-decoded dict)."""
    if isinstance(data, dict):
        return SESSION_EVENT_ADAPTER.validate_python(data)
    return SESSION_EVENT_ADAPTER.validate_json(data)


def dump_event(event: SessionEvent) -> dict[str, Any]:
    """The event exactly as the API shows it (list, stream and send echo agree)."""
    return event.model_dump(mode="json")
