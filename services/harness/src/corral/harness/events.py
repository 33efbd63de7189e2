"""The events the harness appends, built from the contracts models so their shape has one source.

Each builder returns the event as the append request carries it: a JSON-ready dict with an ``id``
the harness chose and no ``processed_at`` (the session-store stamps that).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corral.contracts import ids
from corral.contracts.api.events import (
    AgentMessage,
    ModelUsage,
    RetryStatus,
    RetryStatusObj,
    SessionError,
    SessionErrorBody,
    SessionErrorType,
    SessionStatusIdle,
    SessionStatusRescheduled,
    SessionStatusRunning,
    SpanModelRequestEnd,
    SpanModelRequestStart,
    StopReason,
    StopReasonType,
    StoredEvent,
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


def model_request_start() -> EventDict:
    return _dump(SpanModelRequestStart(id=new_event_id()))


def model_request_end(start_id: str, *, usage: ModelUsage = NO_USAGE, is_error: bool = False) -> EventDict:
    return _dump(
        SpanModelRequestEnd(id=new_event_id(), model_request_start_id=start_id, model_usage=usage, is_error=is_error)
    )


def agent_message(event_id: str, texts: Sequence[str]) -> EventDict:
    """``agent.message`` with one text block per text; ``event_id`` is the one its deltas carried."""
    return _dump(AgentMessage(id=event_id, content=[{"type": "text", "text": text} for text in texts]))


def session_error(error_type: SessionErrorType, message: str, retry_status: RetryStatus) -> EventDict:
    body = SessionErrorBody(type=error_type, message=message, retry_status=RetryStatusObj(type=retry_status))
    return _dump(SessionError(id=new_event_id(), error=body))
