"""The harness's fold of one session's log (pure: records in, state out; no I/O, no clock).

A ``SessionFold`` is what every decision and every model request is computed from: the session as
the log describes it (its ``corral.session_created`` snapshot: agent, environment id, ...; then its
status, archive mark and ``session.updated`` changes), the decision ledger (``ledger.Ledger``) and
the Messages conversation (``conversation.ConversationBuilder``). Each record is decoded once, into
the typed record union of ``corral.contracts.log``, and folded once: a step costs the same whether
the session has ten events or ten thousand.

It is still a pure fold of the log: ``SessionFold.of(records)`` from scratch and a fold restored
from a snapshot then fed the rest are equal (the unit tests check it on random logs), so "every
decision is computed from the log" holds. ``state()``/``restore()`` carry it in a snapshot, under
``FORMAT``: bump it whenever the state's shape or the meaning of a fold changes, and every snapshot
written before is ignored and rebuilt from the log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, assert_never

from pydantic import ValidationError

from corral.contracts.api import events as api
from corral.contracts.log import SessionArchived, SessionCreated, SessionDeleted, SessionRecord, parse_session_record
from corral.harness.budget import Spend
from corral.harness.conversation import ConversationBuilder
from corral.harness.ledger import Ledger
from corral.harness.messageblocks import ChatMessage
from corral.harness.requestbody import encode, with_field

logger = logging.getLogger(__name__)

FORMAT: Final = 3
"""Version of ``SessionFold.state()``; a snapshot of another version is rebuilt from the log.
2: the conversation applies compaction records and truncates large tool results as it folds.
3: the fold keeps the session's spend per model and its budget; a budget pause parks pending input."""

_STATUS_OF: Final[dict[str, str]] = {
    "session.status_running": "running",
    "session.status_idle": "idle",
    "session.status_rescheduled": "rescheduling",
    "session.status_terminated": "terminated",
}


@dataclass(frozen=True)
class Decoded:
    """One record of the session subject, decoded once: ``record`` is ``None`` when it does not
    validate (kept as ``raw`` so one bad record never wedges the session)."""

    seq: int
    raw: dict[str, Any]
    record: SessionRecord | None


def decode(seq: int, data: bytes) -> Decoded:
    """Decode a stored record (JSON) into the typed union, once."""
    raw = json.loads(data)
    if not isinstance(raw, dict):
        return Decoded(seq, {}, None)
    try:
        record = parse_session_record(raw)
    except ValidationError as exc:
        logger.warning(
            "a session record does not validate; folding what can be read of it",
            extra={"fields": {"seq": seq, "type": raw.get("type"), "errors": exc.error_count()}},
        )
        return Decoded(seq, raw, None)
    return Decoded(seq, raw, record)


@dataclass
class SessionFold:
    """The fold of a session subject up to ``last_seq``."""

    session: dict[str, Any] = field(default_factory=dict)
    workspace_id: str = ""
    created: bool = False
    deleted: bool = False
    last_seq: int = 0
    events: int = 0
    """Public events folded (records other than the creation, archive and deletion marks)."""
    ledger: Ledger = field(default_factory=Ledger)
    conversation: ConversationBuilder = field(default_factory=ConversationBuilder)
    spend: Spend = field(default_factory=Spend)
    """Tokens the session's model requests used, per model (what its budget is measured on)."""

    @classmethod
    def empty(cls, *, max_result_chars: int | None = None) -> SessionFold:
        """A fold of nothing yet, whose conversation truncates tool results past ``max_result_chars``."""
        return cls(conversation=ConversationBuilder(max_result_chars=max_result_chars))

    @classmethod
    def of(cls, records: Iterable[Decoded], *, max_result_chars: int | None = None) -> SessionFold:
        fold = cls.empty(max_result_chars=max_result_chars)
        for record in records:
            fold.apply(record)
        return fold

    @property
    def status(self) -> str:
        return str(self.session.get("status", "idle"))

    @property
    def environment_id(self) -> str | None:
        value = self.session.get("environment_id")
        return value if isinstance(value, str) and value else None

    @property
    def model(self) -> str | None:
        """The model id of the session's agent snapshot."""
        agent = self.session.get("agent")
        model = agent.get("model") if isinstance(agent, dict) else None
        model_id = model.get("id") if isinstance(model, dict) else model
        return model_id if isinstance(model_id, str) and model_id else None

    @property
    def budget(self) -> dict[str, Any] | None:
        budget = self.session.get("budget")
        return budget if isinstance(budget, dict) else None

    def messages(self) -> list[ChatMessage]:
        return self.conversation.messages()

    def apply(self, decoded: Decoded) -> None:
        """Fold one record (records at or below ``last_seq`` were folded already and are skipped)."""
        if decoded.seq <= self.last_seq:
            return
        self.last_seq = decoded.seq
        record = decoded.record
        if record is None:
            self._event(decoded)  # unreadable: the ledger and conversation skip what they cannot use
            return
        match record:
            case SessionCreated():
                self.created = True
                self.workspace_id = record.workspace_id
                self.session = dict(decoded.raw["session"])
            case SessionArchived():
                self.session["archived_at"] = record.archived_at
            case SessionDeleted():
                self.deleted = True
            case (
                api.SessionStatusRunning()
                | api.SessionStatusIdle()
                | api.SessionStatusRescheduled()
                | api.SessionStatusTerminated()
            ):
                self.session["status"] = _STATUS_OF[record.type]
                self._event(decoded)
            case api.SessionUpdated():
                for key in ("title", "metadata", "agent", "budget", "resources"):
                    nullable = key in ("title", "budget")
                    if key in record.model_fields_set and (getattr(record, key) is not None or nullable):
                        self.session[key] = decoded.raw[key]
                self._event(decoded)
            case (
                api.UserMessage()
                | api.UserInterrupt()
                | api.UserToolConfirmation()
                | api.UserCustomToolResult()
                | api.UserToolResult()
                | api.AgentMessage()
                | api.AgentThinking()
                | api.AgentToolUse()
                | api.AgentToolResult()
                | api.AgentCustomToolUse()
                | api.AgentMcpToolUse()
                | api.AgentMcpToolResult()
                | api.SpanModelRequestStart()
                | api.SessionError()
                | api.SessionUsageEvent()
            ):
                self._event(decoded)
            case api.AgentThreadContextCompacted():
                details = record.corral_compaction
                if details is not None and details.summary_usage is not None:
                    self.spend.add(self.model or "", details.summary_usage.model_dump())
                self._event(decoded)
            case api.SpanModelRequestEnd():
                self.spend.add(self.model or "", record.model_usage.model_dump())
                self._event(decoded)
            case _:
                assert_never(record)

    def _event(self, decoded: Decoded) -> None:
        self.events += 1
        self.ledger.apply(decoded.seq, decoded.raw)
        self.conversation.apply(decoded.raw)

    # --- snapshots ---------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-ready state, ``FORMAT`` version; ``restore(state())`` is an equal fold."""
        return {**self._state_but_conversation(), "conversation": self.conversation.state()}

    def state_json(self) -> str:
        """``requestbody.encode(self.state())``, the conversation's part joined from the JSON it
        keeps for its messages (``ConversationBuilder.state_json``) rather than encoded again."""
        return with_field(encode(self._state_but_conversation()), "conversation", self.conversation.state_json())

    def _state_but_conversation(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "workspace_id": self.workspace_id,
            "created": self.created,
            "deleted": self.deleted,
            "last_seq": self.last_seq,
            "events": self.events,
            "ledger": self.ledger.state(),
            "spend": self.spend.state(),
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> SessionFold:
        """Raises ``KeyError``/``TypeError``/``ValueError`` for state not of this ``FORMAT``."""
        return cls(
            session=dict(state["session"]),
            workspace_id=str(state["workspace_id"]),
            created=bool(state["created"]),
            deleted=bool(state["deleted"]),
            last_seq=int(state["last_seq"]),
            events=int(state["events"]),
            ledger=Ledger.restore(state["ledger"]),
            conversation=ConversationBuilder.restore(state["conversation"]),
            spend=Spend.restore(state["spend"]),
        )
