"""The events the harness appends, built as the contracts' typed models (``HarnessEvent``), so their
shape has one source and a malformed event fails where it is built.

Each builder returns the typed event with an ``id`` the harness chose and no ``processed_at`` (the
session-store stamps that). They are serialised once, where the append is sent (``wire``, called by
``store.BusStore``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from corral.contracts import ids
from corral.contracts.api.events import (
    AgentCustomToolUse,
    AgentMcpToolResult,
    AgentMcpToolUse,
    AgentMessage,
    AgentThreadContextCompacted,
    AgentToolResult,
    AgentToolUse,
    CompactionDetails,
    HarnessEvent,
    ModelUsage,
    RetryStatus,
    RetryStatusObj,
    SessionError,
    SessionErrorBody,
    SessionErrorType,
    SessionStatusIdle,
    SessionStatusRescheduled,
    SessionStatusRunning,
    SessionUsageEvent,
    SpanModelRequestEnd,
    SpanModelRequestStart,
    StopReason,
    StopReasonType,
    UsageSnapshot,
)
from corral.telemetry import current_trace_id

NO_USAGE = ModelUsage()


def new_event_id() -> str:
    return ids.new_id(ids.EVENT)


def wire(event: HarnessEvent) -> dict[str, Any]:
    """``event`` as ``rpc.AppendEvents.events`` carries it: JSON, without ``processed_at``, fields that
    are ``None`` left out, except in ``session.usage``, which shows its ``budget`` even when null."""
    keep_none = isinstance(event, SessionUsageEvent)
    return event.model_dump(mode="json", exclude={"processed_at"}, exclude_none=not keep_none)


def status_running() -> HarnessEvent:
    return SessionStatusRunning(id=new_event_id())


def status_rescheduled() -> HarnessEvent:
    return SessionStatusRescheduled(id=new_event_id())


def status_idle(reason: StopReasonType) -> HarnessEvent:
    return SessionStatusIdle(id=new_event_id(), stop_reason=StopReason(type=reason))


def requires_action(event_ids: Sequence[str]) -> HarnessEvent:
    """``session.status_idle`` waiting for the client to answer the tool uses ``event_ids``."""
    reason = StopReason(type="requires_action", event_ids=list(event_ids))
    return SessionStatusIdle(id=new_event_id(), stop_reason=reason)


def session_usage(usage: dict[str, Any], budget: dict[str, Any] | None) -> HarnessEvent:
    """``session.usage``: the session's cumulative usage and list cost, with its budget."""
    return SessionUsageEvent(id=new_event_id(), usage=UsageSnapshot.model_validate(usage), budget=budget)


def model_request_start() -> HarnessEvent:
    """``span.model_request_start``, with the trace id of the span current here (the session's run)."""
    return SpanModelRequestStart(id=new_event_id(), corral_trace_id=current_trace_id())


def model_request_end(start_id: str, *, usage: ModelUsage = NO_USAGE, is_error: bool = False) -> HarnessEvent:
    return SpanModelRequestEnd(
        id=new_event_id(),
        model_request_start_id=start_id,
        model_usage=usage,
        is_error=is_error,
        corral_trace_id=current_trace_id(),
    )


def agent_message(event_id: str, texts: Sequence[str]) -> HarnessEvent:
    """``agent.message`` with one text block per text; ``event_id`` is the one its deltas carried."""
    return AgentMessage(id=event_id, content=[{"type": "text", "text": text} for text in texts])


def session_error(
    error_type: SessionErrorType, message: str, retry_status: RetryStatus, *, repository_url: str | None = None
) -> HarnessEvent:
    body = SessionErrorBody(
        type=error_type, message=message, retry_status=RetryStatusObj(type=retry_status), repository_url=repository_url
    )
    return SessionError(id=new_event_id(), error=body)


def tool_use(
    event_id: str,
    name: str,
    input: dict[str, Any],
    *,
    evaluated_permission: Literal["allow", "ask", "deny"],
    evaluation: dict[str, Any] | None,
) -> HarnessEvent:
    """``agent.tool_use``; ``event_id`` is also the Messages ``tool_use.id``. ``evaluation`` is
    ``None`` only for a call refused before any policy applied (a tool the agent does not have)."""
    return AgentToolUse(
        id=event_id, name=name, input=input, evaluated_permission=evaluated_permission, evaluation=evaluation
    )


def custom_tool_use(event_id: str, name: str, input: dict[str, Any]) -> HarnessEvent:
    return AgentCustomToolUse(id=event_id, name=name, input=input)


def tool_result(tool_use_id: str, content: Sequence[dict[str, Any]], *, is_error: bool) -> HarnessEvent:
    """``agent.tool_result`` answering the tool use event ``tool_use_id``."""
    return AgentToolResult(id=new_event_id(), tool_use_id=tool_use_id, content=list(content), is_error=is_error)


def tool_error(tool_use_id: str, message: str) -> HarnessEvent:
    """An error ``agent.tool_result`` with one text block."""
    return tool_result(tool_use_id, [{"type": "text", "text": message}], is_error=True)


def mcp_tool_use(
    event_id: str,
    server: str,
    name: str,
    input: dict[str, Any],
    *,
    evaluated_permission: Literal["allow", "ask", "deny"],
    evaluation: dict[str, Any],
) -> HarnessEvent:
    """``agent.mcp_tool_use``: a call of tool ``name`` of the agent's MCP server ``server``; ``event_id``
    is also the Messages ``tool_use.id``."""
    return AgentMcpToolUse(
        id=event_id,
        mcp_server_name=server,
        name=name,
        input=input,
        evaluated_permission=evaluated_permission,
        evaluation=evaluation,
    )


def mcp_tool_result(tool_use_id: str, content: Sequence[dict[str, Any]], *, is_error: bool) -> HarnessEvent:
    """``agent.mcp_tool_result`` answering the MCP tool use event ``tool_use_id``."""
    return AgentMcpToolResult(id=new_event_id(), mcp_tool_use_id=tool_use_id, content=list(content), is_error=is_error)


def mcp_tool_error(tool_use_id: str, message: str) -> HarnessEvent:
    """An error ``agent.mcp_tool_result`` with one text block."""
    return mcp_tool_result(tool_use_id, [{"type": "text", "text": message}], is_error=True)


def mcp_server_error(
    server: str, error_type: Literal["mcp_connection_failed_error", "mcp_authentication_failed_error"], message: str
) -> HarnessEvent:
    """``session.error`` naming the MCP server that could not be reached (the turn goes on without it)."""
    body = SessionErrorBody(
        type=error_type, message=message, retry_status=RetryStatusObj(type="exhausted"), mcp_server_name=server
    )
    return SessionError(id=new_event_id(), error=body)


def credential_host_unreachable(credential_id: str, vault_id: str, message: str) -> HarnessEvent:
    """``session.error`` naming an ``environment_variable`` credential whose bound host the sandbox could
    not reach (the turn goes on: ``retrying``)."""
    body = SessionErrorBody(
        type="credential_host_unreachable_error",
        message=message,
        retry_status=RetryStatusObj(type="retrying"),
        credential_id=credential_id,
        vault_id=vault_id,
    )
    return SessionError(id=new_event_id(), error=body)


def context_compacted(details: dict[str, Any]) -> HarnessEvent:
    """``agent.thread_context_compacted`` with Corral's record of what was compacted (``corral_compaction``)."""
    compaction = CompactionDetails.model_validate(details)
    return AgentThreadContextCompacted(id=new_event_id(), corral_compaction=compaction)
