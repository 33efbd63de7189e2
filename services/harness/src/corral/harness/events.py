"""The events the harness appends, built from the contracts models so their shape has one source.

Each builder returns the event as the append request carries it: a JSON-ready dict with an ``id``
the harness chose and no ``processed_at`` (the session-store stamps that).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from corral.contracts import ids
from corral.contracts.api.events import (
    AgentCustomToolUse,
    AgentMessage,
    AgentThreadContextCompacted,
    AgentToolResult,
    AgentToolUse,
    CompactionDetails,
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
    StoredEvent,
    UsageSnapshot,
)

EventDict = dict[str, Any]
"""One event as sent in ``rpc.AppendEvents.events``."""

NO_USAGE = ModelUsage()


def new_event_id() -> str:
    return ids.new_id(ids.EVENT)


def _dump(event: StoredEvent) -> EventDict:
    return event.model_dump(mode="json", exclude={"processed_at"}, exclude_none=True)


def status_running() -> EventDict:
    return _dump(SessionStatusRunning(id=new_event_id()))


def status_rescheduled() -> EventDict:
    return _dump(SessionStatusRescheduled(id=new_event_id()))


def status_idle(reason: StopReasonType) -> EventDict:
    return _dump(SessionStatusIdle(id=new_event_id(), stop_reason=StopReason(type=reason)))


def requires_action(event_ids: Sequence[str]) -> EventDict:
    """``session.status_idle`` waiting for the client to answer the tool uses ``event_ids``."""
    reason = StopReason(type="requires_action", event_ids=list(event_ids))
    return _dump(SessionStatusIdle(id=new_event_id(), stop_reason=reason))


def session_usage(usage: dict[str, Any], budget: dict[str, Any] | None) -> EventDict:
    """``session.usage``: the session's cumulative usage and list cost, with its budget."""
    event = SessionUsageEvent(id=new_event_id(), usage=UsageSnapshot.model_validate(usage), budget=budget)
    return event.model_dump(mode="json", exclude={"processed_at"})


def model_request_start() -> EventDict:
    return _dump(SpanModelRequestStart(id=new_event_id()))


def model_request_end(start_id: str, *, usage: ModelUsage = NO_USAGE, is_error: bool = False) -> EventDict:
    return _dump(
        SpanModelRequestEnd(id=new_event_id(), model_request_start_id=start_id, model_usage=usage, is_error=is_error)
    )


def agent_message(event_id: str, texts: Sequence[str]) -> EventDict:
    """``agent.message`` with one text block per text; ``event_id`` is the one its deltas carried."""
    return _dump(AgentMessage(id=event_id, content=[{"type": "text", "text": text} for text in texts]))


def session_error(
    error_type: SessionErrorType, message: str, retry_status: RetryStatus, *, repository_url: str | None = None
) -> EventDict:
    body = SessionErrorBody(
        type=error_type, message=message, retry_status=RetryStatusObj(type=retry_status), repository_url=repository_url
    )
    return _dump(SessionError(id=new_event_id(), error=body))


def tool_use(
    event_id: str,
    name: str,
    input: dict[str, Any],
    *,
    evaluated_permission: Literal["allow", "ask", "deny"],
    evaluation: dict[str, Any] | None,
) -> EventDict:
    """``agent.tool_use``; ``event_id`` is also the Messages ``tool_use.id``. ``evaluation`` is
    ``None`` only for a call refused before any policy applied (a tool the agent does not have)."""
    return _dump(
        AgentToolUse(
            id=event_id, name=name, input=input, evaluated_permission=evaluated_permission, evaluation=evaluation
        )
    )


def custom_tool_use(event_id: str, name: str, input: dict[str, Any]) -> EventDict:
    return _dump(AgentCustomToolUse(id=event_id, name=name, input=input))


def tool_result(tool_use_id: str, content: Sequence[dict[str, Any]], *, is_error: bool) -> EventDict:
    """``agent.tool_result`` answering the tool use event ``tool_use_id``."""
    return _dump(AgentToolResult(id=new_event_id(), tool_use_id=tool_use_id, content=list(content), is_error=is_error))


def tool_error(tool_use_id: str, message: str) -> EventDict:
    """An error ``agent.tool_result`` with one text block."""
    return tool_result(tool_use_id, [{"type": "text", "text": message}], is_error=True)


def context_compacted(details: dict[str, Any]) -> EventDict:
    """``agent.thread_context_compacted`` with Corral's record of what was compacted (``corral_compaction``)."""
    compaction = CompactionDetails.model_validate(details)
    return _dump(AgentThreadContextCompacted(id=new_event_id(), corral_compaction=compaction))
