"""Showing a session's events as they arrive (live text, tool calls and results one line each) and
answering the session when it waits for the client (``requires_action``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anthropic
import typer
from rich.text import Text

from corral.cli.failure import Failure
from corral.cli.output import out

#: The longest tool input or result shown on its one line.
SHOWN_CHARS = 160

#: The event types the session waits on a confirmation for, and the one it waits on a result for.
CONFIRMABLE = frozenset({"agent.tool_use", "agent.mcp_tool_use"})
CUSTOM = "agent.custom_tool_use"


class Answer(StrEnum):
    """How ``requires_action`` is answered: ask on the terminal, or allow or deny every call."""

    ASK = "ask"
    ALLOW = "allow"
    DENY = "deny"


def one_line(text: str, limit: int = SHOWN_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def texts(blocks: Iterable[Any] | None) -> str:
    return "".join(getattr(block, "text", "") or "" for block in blocks or ())


def tool_input(event: Any) -> str:
    """A tool call's input as people read it: a bash command as is, anything else as JSON."""
    data = getattr(event, "input", None) or {}
    if isinstance(data, dict) and set(data) <= {"command", "timeout_ms", "restart"} and "command" in data:
        return str(data["command"])
    return json.dumps(data, ensure_ascii=False, default=str)


def tool_name(event: Any) -> str:
    name = str(getattr(event, "name", "?"))
    server = getattr(event, "mcp_server_name", None)
    return f"{server}/{name}" if server else name


@dataclass
class Outcome:
    """How following the session ended: ``exit_code`` 0 for a turn that ended normally."""

    exit_code: int
    reason: str


@dataclass
class TurnView:
    """Prints events in order; remembers tool calls so ``requires_action`` can name them."""

    show_user: bool = False
    streaming: bool = False
    calls: dict[str, Any] = field(default_factory=dict)

    def _end_stream(self) -> None:
        if self.streaming:
            out.print()
            self.streaming = False

    def delta(self, event: Any) -> None:
        text = getattr(getattr(getattr(event, "delta", None), "content", None), "text", None)
        if text:
            out.print(text, end="", markup=False)
            out.file.flush()
            self.streaming = True

    def show(self, event: Any) -> None:
        kind = event.type
        if kind == "event_delta":
            self.delta(event)
            return
        if kind == "event_start":
            return
        if kind == "agent.message":
            if self.streaming:
                self._end_stream()
            else:
                out.print(texts(event.content), markup=False)
            return
        self._end_stream()
        if kind == "user.message" and self.show_user:
            out.print(Text(f"> {texts(event.content)}", style="bold"))
        elif kind == "agent.thinking":
            out.print(Text("(thinking)", style="dim"))
        elif kind in (*CONFIRMABLE, CUSTOM):
            self.calls[event.id] = event
            label = "custom tool " if kind == CUSTOM else ""
            out.print(Text(f"→ {label}{tool_name(event)}: {one_line(tool_input(event))}", style="cyan"))
        elif kind in ("agent.tool_result", "agent.mcp_tool_result"):
            result = texts(getattr(event, "content", None)).strip()
            lines = result.count("\n") + 1 if result else 0
            more = f" ({lines} lines)" if lines > 1 else ""
            style, label = ("red", "error") if getattr(event, "is_error", False) else ("green", "ok")
            out.print(Text(f"← {label}{more}: {one_line(result)}", style=style))
        elif kind == "user.tool_confirmation":
            out.print(Text(f"  {event.result}", style="dim"))
        elif kind == "session.error":
            error = event.error
            out.print(Text(f"! {error.type}: {error.message}", style="red"))
        elif kind == "session.status_terminated":
            out.print(Text("session terminated", style="red"))


def ask(event: Any, answer: Answer) -> dict[str, Any]:
    """The client event that answers one call the session waits on."""
    if event.type == CUSTOM:
        if answer is not Answer.ASK:
            raise Failure(
                f"the agent called the custom tool {event.name!r}, which only you can answer: "
                "run without --yes/--deny to type its result"
            )
        result = typer.prompt(f"result of {event.name}", err=True)
        return {
            "type": "user.custom_tool_result",
            "custom_tool_use_id": event.id,
            "content": [{"type": "text", "text": result}],
        }
    if answer is Answer.ASK:
        allowed = typer.confirm(f"allow {tool_name(event)}: {one_line(tool_input(event))}?", default=False, err=True)
    else:
        allowed = answer is Answer.ALLOW
    return {"type": "user.tool_confirmation", "tool_use_id": event.id, "result": "allow" if allowed else "deny"}


def follow(
    client: anthropic.Anthropic,
    session_id: str,
    events: Iterable[Any],
    view: TurnView,
    *,
    answer: Answer | None,
    seen: set[str] | None = None,
    until: Callable[[Any], bool] | None = None,
) -> Outcome:
    """Show ``events`` until the turn ends (``session.status_idle`` not waiting on the client), the
    session terminates, or ``until(event)``. With ``answer``, calls the session waits on are answered;
    without, following stops there. ``seen``: ids already shown (skipped)."""
    for event in events:
        event_id = getattr(event, "id", None)
        if event_id is not None and seen is not None:
            if event_id in seen:
                continue
            seen.add(event_id)
        view.show(event)
        if until is not None and until(event):
            return Outcome(0, "stopped")
        if event.type == "session.status_terminated":
            return Outcome(1, "the session terminated")
        if event.type == "session.deleted":
            return Outcome(1, "the session was deleted")
        if event.type != "session.status_idle":
            continue
        stop = event.stop_reason
        if stop.type == "requires_action":
            if answer is None:
                return Outcome(0, "waiting for the client")
            waiting = [view.calls[i] for i in stop.event_ids if i in view.calls]
            if not waiting:
                raise Failure(f"session {session_id} waits on events this command did not see: {stop.event_ids}")
            client.beta.sessions.events.send(session_id, events=[ask(call, answer) for call in waiting])  # type: ignore[misc]
            continue
        if stop.type == "end_turn":
            return Outcome(0, "idle")
        return Outcome(1, f"the turn ended with {stop.type}")
    return Outcome(1, "the event stream ended early")
