"""The fold of a session's log that decisions need (``Ledger``): its tool uses and their answers,
whether input is pending, interrupts, and model requests left open. ``corral.harness.decide`` plans
from it; the harness keeps one up to date record by record while it holds the lease.

**Input** is pending when the model has not yet seen it in a finished turn. User input (a usable
``user.message``, or a ``user.custom_tool_result``) counts as seen once a model request started
after it is followed by a ``session.status_idle`` (a turn ends whether it succeeded, ran out of
retries or was interrupted), which keeps a session whose model keeps failing from being retried
forever; a message logged *during* a request was not seen by it. A tool result the harness logged
counts as seen at the next ``session.status_idle`` (it is only ever followed by one when the turn
ends: interrupted, out of retries, or paused for the remaining tool uses). A ``user.interrupt``
cancels all input logged before it, and the results that close the tool uses open at that moment
are not input either: they end the interrupted turn.

**A budget pause** (``session.status_idle`` with ``budget_reached``, logged instead of a model
request) ends the turn with its input unseen by the model; that input is no longer pending (or the
next decision would ask for the request the budget refused, forever). The model sees it, in the
conversation, with the next input the client sends.

**The tool call limit.** A turn's tool calls are counted from the newest ``user.message`` (or
interrupt). When the results are in and the count has reached the limit, the model is not asked
again: a ``session.error`` (``tool_use_limit_reached_error``) and an idle end the turn, and that
error closes the results it leaves unseen. A message the user sent meanwhile starts a new count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from corral.contracts.rpc import LoggedEvent
from corral.harness.messageblocks import user_blocks

TOOL_LIMIT_ERROR: Final = "tool_use_limit_reached_error"


def _error_type(event: Mapping[str, Any]) -> object:
    error = event.get("error")
    return error.get("type") if isinstance(error, Mapping) else None


@dataclass
class ToolUse:
    id: str
    seq: int
    name: str
    input: dict[str, Any]
    custom: bool
    permission: str | None
    answered: bool = False
    interrupted: bool = False
    """A ``user.interrupt`` came while the use was open: its result ends the turn, it is not input."""
    confirmation: str | None = None
    deny_message: str | None = None
    mcp_server: str | None = None
    """The server of an ``agent.mcp_tool_use``."""

    @property
    def executable(self) -> bool:
        return not self.custom and (
            self.permission == "allow" or (self.permission == "ask" and self.confirmation == "allow")
        )

    @property
    def denied(self) -> bool:
        return not self.custom and (
            self.permission == "deny" or (self.permission == "ask" and self.confirmation == "deny")
        )


@dataclass
class Ledger:
    """The fold of a log that decisions need: tool uses and their answers, pending input, interrupts."""

    uses: dict[str, ToolUse] = field(default_factory=dict)
    user_pending: bool = False
    message_unseen: bool = False
    """A ``user.message`` was logged after the newest model request started."""
    user_seen_when_idle: bool = False
    results_pending: bool = False
    last_interrupt: int = 0
    last_idle_ids: tuple[str, ...] | None = None
    """``event_ids`` of the newest ``session.status_idle`` if it was ``requires_action``."""
    turn_tool_uses: int = 0
    """Tool calls the model made since the newest user message or interrupt (the current turn's)."""
    open_starts: dict[str, None] = field(default_factory=dict)
    """``span.model_request_start`` ids no ``span.model_request_end`` closes yet, in log order."""
    ended: set[str] = field(default_factory=set)
    """``model_request_start_id`` of every ``span.model_request_end`` so far."""

    @classmethod
    def of(cls, events: Sequence[LoggedEvent]) -> Ledger:
        ledger = cls()
        for logged in events:
            ledger.apply(logged.seq, logged.event)
        return ledger

    def _user_input(self) -> None:
        self.user_pending = True
        self.user_seen_when_idle = False

    def apply(self, seq: int, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "user.message":
            if user_blocks(event.get("content")):
                self._user_input()
                self.message_unseen = True
                self.turn_tool_uses = 0
        elif kind in ("agent.tool_use", "agent.custom_tool_use", "agent.mcp_tool_use"):
            self.turn_tool_uses += 1
            self._use(seq, event, custom=kind == "agent.custom_tool_use")
        elif kind in ("agent.tool_result", "agent.mcp_tool_result"):
            answered = event.get("tool_use_id") if kind == "agent.tool_result" else event.get("mcp_tool_use_id")
            use = self.uses.get(str(answered))
            if use is not None and not use.answered:
                use.answered = True
                self.results_pending = self.results_pending or not use.interrupted
        elif kind == "user.custom_tool_result":
            use = self.uses.get(str(event.get("custom_tool_use_id")))
            if use is not None and use.custom and not use.answered:
                use.answered = True
                self._user_input()
        elif kind == "user.tool_confirmation":
            use = self.uses.get(str(event.get("tool_use_id")))
            if use is not None and not use.custom and use.permission == "ask" and use.confirmation is None:
                use.confirmation = "allow" if event.get("result") == "allow" else "deny"
                message = event.get("deny_message")
                use.deny_message = message if isinstance(message, str) else None
        elif kind == "span.model_request_start":
            start_id = str(event.get("id"))
            if start_id not in self.ended:
                self.open_starts[start_id] = None
            self.message_unseen = False
            if self.user_pending:
                self.user_seen_when_idle = True
        elif kind == "span.model_request_end":
            ended = event.get("model_request_start_id")
            if isinstance(ended, str):
                self.ended.add(ended)
                self.open_starts.pop(ended, None)
        elif kind == "session.status_idle":
            if self.user_seen_when_idle:
                self.user_pending = self.user_seen_when_idle = False
            self.results_pending = False
            reason = event.get("stop_reason")
            if isinstance(reason, Mapping) and reason.get("type") == "budget_reached":
                # The budget stopped the turn before the model saw the input: it waits in the
                # conversation for the next input (sent once the budget is raised or removed).
                self.user_pending = self.user_seen_when_idle = self.message_unseen = False
            ids = reason.get("event_ids") if isinstance(reason, Mapping) else None
            waiting = isinstance(reason, Mapping) and reason.get("type") == "requires_action"
            self.last_idle_ids = tuple(str(i) for i in ids or ()) if waiting else None
        elif kind == "session.error" and _error_type(event) == TOOL_LIMIT_ERROR:
            # The limit ended the turn: the results (tool and custom) it was holding are closed with it.
            self.results_pending = False
            if not self.message_unseen:
                self.user_pending = self.user_seen_when_idle = False
        elif kind == "user.interrupt":
            self.last_interrupt = seq
            self.turn_tool_uses = 0
            self.user_pending = self.user_seen_when_idle = self.results_pending = self.message_unseen = False
            for use in self.open_uses:
                use.interrupted = True

    def _use(self, seq: int, event: Mapping[str, Any], *, custom: bool) -> None:
        event_id, name, tool_input = event.get("id"), event.get("name"), event.get("input")
        if not isinstance(event_id, str) or event_id in self.uses:
            return
        permission = event.get("evaluated_permission")
        server = event.get("mcp_server_name") if event.get("type") == "agent.mcp_tool_use" else None
        self.uses[event_id] = ToolUse(
            id=event_id,
            seq=seq,
            name=str(name),
            input=tool_input if isinstance(tool_input, dict) else {},
            custom=custom,
            permission=permission if isinstance(permission, str) else None,
            mcp_server=str(server) if server is not None else None,
        )

    @property
    def open_uses(self) -> list[ToolUse]:
        return [use for use in self.uses.values() if not use.answered]

    @property
    def pending(self) -> bool:
        return self.user_pending or self.results_pending

    @property
    def orphans(self) -> tuple[str, ...]:
        """Ids of ``span.model_request_start`` events that no ``span.model_request_end`` closes."""
        return tuple(self.open_starts)

    def state(self) -> dict[str, Any]:
        """The ledger as JSON-ready data (for a snapshot); ``restore`` reads it back."""
        return {
            "uses": [asdict(use) for use in self.uses.values()],
            "user_pending": self.user_pending,
            "message_unseen": self.message_unseen,
            "user_seen_when_idle": self.user_seen_when_idle,
            "results_pending": self.results_pending,
            "last_interrupt": self.last_interrupt,
            "last_idle_ids": None if self.last_idle_ids is None else list(self.last_idle_ids),
            "turn_tool_uses": self.turn_tool_uses,
            "open_starts": list(self.open_starts),
            "ended": sorted(self.ended),
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> Ledger:
        idle_ids = state["last_idle_ids"]
        return cls(
            uses={use["id"]: ToolUse(**use) for use in state["uses"]},
            user_pending=bool(state["user_pending"]),
            message_unseen=bool(state["message_unseen"]),
            user_seen_when_idle=bool(state["user_seen_when_idle"]),
            results_pending=bool(state["results_pending"]),
            last_interrupt=int(state["last_interrupt"]),
            last_idle_ids=None if idle_ids is None else tuple(str(i) for i in idle_ids),
            turn_tool_uses=int(state["turn_tool_uses"]),
            open_starts=dict.fromkeys(str(i) for i in state["open_starts"]),
            ended={str(i) for i in state["ended"]},
        )


def has_pending_input(events: Sequence[LoggedEvent]) -> bool:
    """Whether the log holds input (a message, a tool result) no finished turn has shown the model."""
    return Ledger.of(events).pending


def _seq_of_first(events: Sequence[LoggedEvent], kind: str, *, after: int) -> int | None:
    return next((e.seq for e in events if e.seq > after and e.event.get("type") == kind), None)


def interrupted_after(events: Sequence[LoggedEvent], seq: int) -> bool:
    """Whether a ``user.interrupt`` was logged after stream sequence ``seq``."""
    return _seq_of_first(events, "user.interrupt", after=seq) is not None


def last_interrupt(events: Sequence[LoggedEvent]) -> int:
    """Stream sequence of the newest ``user.interrupt`` (0 when there is none)."""
    return max((e.seq for e in events if e.event.get("type") == "user.interrupt"), default=0)


def orphan_starts(events: Sequence[LoggedEvent]) -> tuple[str, ...]:
    """Ids of ``span.model_request_start`` events that no ``span.model_request_end`` closes."""
    ended = {e.event.get("model_request_start_id") for e in events if e.event.get("type") == "span.model_request_end"}
    return tuple(
        str(e.event["id"])
        for e in events
        if e.event.get("type") == "span.model_request_start" and e.event.get("id") not in ended
    )
