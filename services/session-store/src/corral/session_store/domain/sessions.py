"""A session's state as a fold of its log, and the rules every append is checked against. Pure.

Statuses move ``idle -> running -> idle``; ``running -> rescheduling -> running`` when a harness
died mid-turn or waits to retry a model request after a transient error (``rescheduling -> idle``
when that turn then ends); ``terminated`` is final (nothing in Corral terminates a session yet).
Clients may queue input while ``idle``, ``running`` or ``rescheduling``; the harness appends agent,
span and status events while it holds the lease. A session its budget paused (``session.status_idle``
with ``budget_reached``) takes only the events that settle what the agent asked for until its budget
is raised or removed (``session.updated`` with ``budget``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, assert_never

from corral.contracts.api import events as ev
from corral.contracts.api.errors import ApiError, conflict, invalid
from corral.contracts.clock import parse_rfc3339
from corral.contracts.log import SessionArchived, SessionCreated, SessionDeleted, SessionRecord
from corral.session_store.domain.unsupported import reject_unbuilt_event

CLIENT_TYPES = frozenset({"user.message", "user.interrupt", "user.tool_confirmation", "user.custom_tool_result"})
WAKING_TYPES = CLIENT_TYPES
STATUS_FOR_EVENT = {
    "session.status_running": "running",
    "session.status_idle": "idle",
    "session.status_rescheduled": "rescheduling",
    "session.status_terminated": "terminated",
}
#: What the harness may append in each status (besides the status events themselves).
HARNESS_WHILE_RUNNING = frozenset(
    {
        "agent.message",
        "agent.thinking",
        "agent.tool_use",
        "agent.tool_result",
        "agent.custom_tool_use",
        "agent.mcp_tool_use",
        "agent.mcp_tool_result",
        "agent.thread_context_compacted",
        "span.model_request_start",
        "span.model_request_end",
        "session.error",
        "session.usage",
    }
)
#: What a client may still send while the session is paused by its budget: the answers that settle
#: what the agent already asked for (and interrupts). New work waits for the budget to change.
SETTLE_TYPES = frozenset({"user.interrupt", "user.tool_confirmation", "user.custom_tool_result"})
STATUS_FROM = {
    "session.status_running": {"idle", "rescheduling"},
    "session.status_rescheduled": {"running"},
    "session.status_idle": {"running", "rescheduling"},
    "session.status_terminated": {"idle", "running", "rescheduling"},
}


def apply_update(session: dict[str, Any], record: ev.SessionUpdated) -> None:
    """Fold a ``session.updated`` event (only changed fields; ``title`` and ``budget`` may be null)."""
    sent = record.model_fields_set
    for key in ("title", "metadata", "agent", "budget", "resources"):
        value = getattr(record, key)
        if key in sent and (value is not None or key in ("title", "budget")):
            session[key] = value


@dataclass
class SessionState:
    """What the store needs to check the next append: the fold of a session subject so far."""

    session_id: str
    workspace_id: str = ""
    session: dict[str, Any] = field(default_factory=dict)
    status: str = "idle"
    last_seq: int = 0
    """The subject's raw last sequence (parts of a record its writer abandoned included): the next
    append is fenced on this, or an abandoned part would fence every writer out."""
    record_seq: int = 0
    """The last whole record's sequence: what a reader of the log sees as its end."""
    archived: bool = False
    deleted: bool = False
    created: bool = False
    awaiting_confirmation: set[str] = field(default_factory=set)
    """``agent.tool_use`` ids whose policy said ``ask`` and that no ``user.tool_confirmation`` answered."""
    awaiting_result: set[str] = field(default_factory=set)
    """``agent.custom_tool_use`` ids that no ``user.custom_tool_result`` answered."""
    budget_paused: bool = False
    """The newest turn ended with ``budget_reached`` and the budget has not changed since."""
    list_cost: int | None = None
    """USD cents the newest ``session.usage`` event said the session has used (``None``: none yet)."""

    def apply(self, record: SessionRecord, seq: int) -> None:
        """Fold one record (decoded once, where it was read: ``corral.contracts.log.parse_session_record``)."""
        self.last_seq = self.record_seq = seq
        match record:
            case SessionCreated():
                self.created = True
                self.workspace_id = record.workspace_id
                self.session = record.session.model_dump(mode="json")
                self.status = self.session.get("status", "idle")
            case SessionArchived():
                self.archived = True
                self.session["archived_at"] = record.archived_at
            case SessionDeleted():
                self.deleted = True
            case ev.AgentToolUse() | ev.AgentMcpToolUse():
                if record.evaluated_permission == "ask":
                    self.awaiting_confirmation.add(record.id)
            case ev.UserToolConfirmation():
                self.awaiting_confirmation.discard(record.tool_use_id)
            case ev.AgentCustomToolUse():
                self.awaiting_result.add(record.id)
            case ev.UserCustomToolResult():
                self.awaiting_result.discard(record.custom_tool_use_id)
            case ev.SessionStatusIdle():
                self.status = STATUS_FOR_EVENT[record.type]
                self.budget_paused = record.stop_reason.type == "budget_reached"
            case ev.SessionStatusRunning() | ev.SessionStatusRescheduled() | ev.SessionStatusTerminated():
                self.status = STATUS_FOR_EVENT[record.type]
                self.budget_paused = False
            case ev.SessionUpdated():
                apply_update(self.session, record)
                if "budget" in record.model_fields_set:
                    self.budget_paused = False
            case (
                ev.UserMessage()
                | ev.UserInterrupt()
                | ev.UserToolResult()
                | ev.AgentMessage()
                | (ev.AgentThinking())
                | ev.AgentToolResult()
                | ev.AgentMcpToolResult()
                | ev.AgentThreadContextCompacted()
                | ev.SpanModelRequestStart()
                | (ev.SpanModelRequestEnd())
                | ev.SessionError()
            ):
                pass
            case ev.SessionUsageEvent():
                cost = record.usage.list_cost
                if cost is not None and cost.amount.isdigit():
                    self.list_cost = int(cost.amount)
            case _:
                assert_never(record)
        self.session["status"] = self.status


def check_client_append(state: SessionState, events: list[dict[str, Any]]) -> None:
    """Raise the API error a client gets for appending ``events`` in this state."""
    ensure_writable(state)
    if state.status == "terminated":
        raise conflict(
            f"session {state.session_id!r} is terminated and accepts no more events", error_code="session_terminated"
        )
    confirmable = set(state.awaiting_confirmation)
    answerable = set(state.awaiting_result)
    for i, event in enumerate(events):
        kind = event.get("type")
        reject_unbuilt_event(kind, where=f"events.{i}")
        if kind not in CLIENT_TYPES:
            raise invalid(f"events.{i}.type: clients cannot send {kind!r} events")
        if state.budget_paused and kind not in SETTLE_TYPES:
            raise invalid(
                f"events.{i}: session {state.session_id!r} is paused because it reached its budget "
                "(stop_reason budget_reached), so it takes no new input; raise the budget or remove it "
                "(POST /v1/sessions/{id} with budget) and send the event again",
                error_code="budget_reached",
            )
        if kind == "user.tool_confirmation":
            tool_use_id = event.get("tool_use_id")
            if tool_use_id not in confirmable:
                raise invalid(
                    f"events.{i}.tool_use_id: no agent.tool_use or agent.mcp_tool_use {tool_use_id!r} is waiting "
                    "for confirmation in this session",
                    error_code="tool_use_not_pending",
                )
            if event.get("deny_message") is not None and event.get("result") != "deny":
                raise invalid(f"events.{i}.deny_message: only a deny carries a deny_message")
            confirmable.discard(tool_use_id)
        elif kind == "user.custom_tool_result":
            custom_id = event.get("custom_tool_use_id")
            if custom_id not in answerable:
                raise invalid(
                    f"events.{i}.custom_tool_use_id: no agent.custom_tool_use {custom_id!r} is waiting for a result "
                    "in this session",
                    error_code="custom_tool_use_not_pending",
                )
            answerable.discard(custom_id)


def check_harness_append(state: SessionState, events: list[dict[str, Any]]) -> None:
    """Walk the status machine over ``events``; raise a conflict at the first illegal step."""
    if not state.created or state.deleted:
        raise conflict(f"session {state.session_id!r} no longer exists", error_code="session_not_found")
    status = state.status
    for i, event in enumerate(events):
        kind = event.get("type", "")
        if kind in STATUS_FROM:
            if status not in STATUS_FROM[kind]:
                raise conflict(
                    f"events.{i}: {kind} is not allowed while the session is {status}", error_code="wrong_status"
                )
            status = STATUS_FOR_EVENT[kind]
        elif kind in HARNESS_WHILE_RUNNING:
            if status != "running":
                raise conflict(
                    f"events.{i}: {kind} is only allowed while the session is running, not {status}",
                    error_code="wrong_status",
                )
        else:
            raise invalid(f"events.{i}.type: the harness cannot append {kind!r}")


def ensure_exists(state: SessionState, workspace_id: str | None) -> None:
    if not state.created or state.deleted or (workspace_id is not None and state.workspace_id != workspace_id):
        raise ApiError("not_found_error", f"session {state.session_id!r} was not found", error_code="session_not_found")


def ensure_writable(state: SessionState) -> None:
    if state.archived:
        raise conflict(f"session {state.session_id!r} is archived and read-only", error_code="session_archived")


def ensure_not_running(state: SessionState, action: str) -> None:
    if state.status in ("running", "rescheduling"):
        raise conflict(
            f"session {state.session_id!r} is {state.status}; send a user.interrupt and wait for "
            f"session.status_idle before you {action} it",
            error_code="session_running",
        )


# --- the projection row: usage and active-time accounting -----------------------------------------------


@dataclass
class SessionRow:
    """The ``sessions`` projection row for one session; ``apply`` is the projector's fold."""

    session_id: str
    workspace_id: str = ""
    body: dict[str, Any] = field(default_factory=dict)
    status: str = "idle"
    created_at: datetime | None = None
    archived_at: datetime | None = None
    running_since: datetime | None = None
    active_seconds: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    last_seq: int = 0
    deleted: bool = False

    def apply(self, record: SessionRecord, seq: int) -> None:
        """Fold one record (decoded once, where it was read: ``corral.contracts.log.parse_session_record``)."""
        self.last_seq = seq
        match record:
            case SessionCreated():
                self.workspace_id = record.workspace_id
                self.body = record.session.model_dump(mode="json")
                self.status = self.body.get("status", "idle")
                self.created_at = parse_rfc3339(self.body["created_at"])
            case SessionArchived():
                self.archived_at = parse_rfc3339(record.archived_at)
                self.body["archived_at"] = record.archived_at
                self.body["updated_at"] = record.archived_at
            case SessionDeleted():
                self.deleted = True
            case (
                ev.SessionStatusRunning()
                | ev.SessionStatusRescheduled()
                | ev.SessionStatusTerminated()
                | (ev.SessionStatusIdle())
            ):
                at = record.processed_at
                when = parse_rfc3339(at) if at else None
                new_status = STATUS_FOR_EVENT[record.type]
                if new_status == "running":
                    if self.running_since is None:
                        self.running_since = when
                elif self.running_since is not None and when is not None:
                    self.active_seconds += max(0.0, (when - self.running_since).total_seconds())
                    self.running_since = None
                self.status = new_status
                if at:
                    self.body["updated_at"] = at
            case ev.SpanModelRequestEnd() | ev.AgentThreadContextCompacted():
                if isinstance(record, ev.SpanModelRequestEnd):
                    usage = record.model_usage
                elif record.corral_compaction is not None and record.corral_compaction.summary_usage is not None:
                    usage = record.corral_compaction.summary_usage  # the compaction's summary request
                else:
                    usage = ev.ModelUsage()
                self.input_tokens += usage.input_tokens or 0
                self.output_tokens += usage.output_tokens or 0
                self.cache_read_input_tokens += usage.cache_read_input_tokens or 0
                self.cache_creation_input_tokens += usage.cache_creation_input_tokens or 0
            case ev.SessionUpdated():
                apply_update(self.body, record)
                if record.processed_at:
                    self.body["updated_at"] = record.processed_at
            case ev.SessionUsageEvent():
                if record.usage.list_cost is not None:
                    self.body["usage"] = {"list_cost": record.usage.list_cost.model_dump(mode="json")}
            case (
                ev.UserMessage()
                | ev.UserInterrupt()
                | ev.UserToolConfirmation()
                | ev.UserCustomToolResult()
                | (ev.UserToolResult())
                | ev.AgentMessage()
                | ev.AgentThinking()
                | ev.AgentToolUse()
                | ev.AgentToolResult()
                | (ev.AgentCustomToolUse())
                | ev.AgentMcpToolUse()
                | ev.AgentMcpToolResult()
                | ev.AgentThreadContextCompacted()
                | ev.SpanModelRequestStart()
                | ev.SessionError()
            ):
                pass
            case _:
                assert_never(record)
        self.body["status"] = self.status

    def session(self, now: datetime) -> dict[str, Any]:
        """The public Session object, with usage and stats as of ``now``."""
        active = self.active_seconds
        if self.running_since is not None:
            active += max(0.0, (now - self.running_since).total_seconds())
        duration = (now - self.created_at).total_seconds() if self.created_at else 0.0
        body = dict(self.body)
        body["stats"] = {"active_seconds": round(active, 3), "duration_seconds": round(max(0.0, duration), 3)}
        body["usage"] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_creation_input_tokens,
                "ephemeral_1h_input_tokens": 0,
            },
            "active_seconds": round(active, 3),
        }
        logged = self.body.get("usage")
        if isinstance(logged, dict) and isinstance(logged.get("list_cost"), dict):
            body["usage"]["list_cost"] = logged["list_cost"]
        return body
