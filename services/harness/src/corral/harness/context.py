"""Context management (pure: no I/O, no clock): what the model is shown of a long session, and how
it is made to fit the model's context window.

The log keeps everything; the *view* is the conversation a model request carries:

- **Compaction events decide the view.** ``agent.thread_context_compacted`` carries Corral's record
  of what was done (``corral_compaction``, see ``corral.contracts.api.events.CompactionDetails``):
  tool results cleared (shown as a note naming the result's event id) and, for a summary, the last
  event the summary replaces. The view is the newest summary, then the conversation rebuilt from the
  events after the event it replaces, with every cleared result replaced by its note. It is a
  function of the log alone, so any harness that wakes after a compaction rebuilds the same
  conversation without asking the model again.
- **Large tool results are truncated** in the view past ``max_result_chars`` characters, with a
  note naming the event that holds the whole result (a setting: harnesses of one deployment agree).

Fitting a request (``corral.harness.compaction`` runs this): past the budget, first clear old tool
results (oldest first, keeping the newest ``keep`` ones); if that is not enough, summarise the oldest
turns (``summary_cut`` picks where the kept part begins; ``summary_request`` is the separate-context
request that writes the summary).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from corral.contracts.rpc import LoggedEvent
from corral.harness.conversation import Block, ChatMessage, merge, rebuild

COMPACTED: Final = "agent.thread_context_compacted"
RESULT_TYPES: Final = frozenset({"agent.tool_result", "user.custom_tool_result"})
_STARTS_TURN: Final = frozenset({"user.message", "agent.message", "agent.tool_use", "agent.custom_tool_use"})

#: Context windows in tokens by model id prefix (longest prefix wins); ``DEFAULT_CONTEXT_WINDOW``
#: for any other model. ``CORRAL_HARNESS_CONTEXT_WINDOW_TOKENS`` overrides both.
CONTEXT_WINDOWS: Final[Mapping[str, int]] = {
    "claude-opus-4": 200_000,
    "claude-sonnet-4": 200_000,
    "claude-haiku-4": 200_000,
    "claude-3-7-sonnet": 200_000,
    "claude-3-5-sonnet": 200_000,
    "claude-3-5-haiku": 200_000,
    "claude-3-opus": 200_000,
    "claude-3-haiku": 200_000,
}
DEFAULT_CONTEXT_WINDOW: Final = 200_000

#: First guess of characters per token of a request's JSON; calibrated against ``count_tokens``.
CHARS_PER_TOKEN: Final = 3.5
#: Share of the budget the part kept verbatim after a summary may use (the rest: summary, headroom).
KEEP_FRACTION: Final = 0.5
#: A result shorter than this is never cleared: its note would save nothing.
MIN_CLEARABLE_CHARS: Final = 200

SUMMARY_SYSTEM: Final = (
    "Summarise the conversation below so that an agent can carry on the work from your summary alone; "
    "the original messages will no longer be available to it. Keep: the user's goals and every request "
    "still open; decisions made and why; files and paths created, read or changed; commands run and "
    "the results that matter; errors met and how they were handled; the current state and the next "
    "step. Quote exact names, paths, identifiers and numbers. Write concise notes, not a dialogue."
)
"""The system prompt of a summary request (the embedded model recognises it by its first words)."""

_TOO_LONG = re.compile(r"prompt is too long: (\d+) tokens > (\d+) maximum")


def cleared_note(event_id: str) -> str:
    return (
        f"[This tool result was cleared from the conversation to save context. The whole result is kept "
        f"in the session log as event {event_id}.]"
    )


def truncated_note(event_id: str, shown: int, total: int) -> str:
    return (
        f"[Truncated: the first {shown} of {total} characters are shown. The whole result is kept in the "
        f"session log as event {event_id}.]"
    )


def summary_text(summary: str, through: str) -> str:
    return (
        "This session's earlier conversation was summarised to fit the model's context window (the session "
        f"log keeps it whole, up to event {through}). Summary:\n\n{summary}"
    )


def context_window(model: str, override: int | None = None) -> int:
    """The model's context window in tokens: the override, else the table, else the default."""
    if override is not None:
        return override
    matches = [prefix for prefix in CONTEXT_WINDOWS if model.startswith(prefix)]
    return CONTEXT_WINDOWS[max(matches, key=len)] if matches else DEFAULT_CONTEXT_WINDOW


def prompt_too_long(message: str) -> int | None:
    """The maximum a "prompt is too long: N tokens > M maximum" error names (M), else ``None``."""
    found = _TOO_LONG.search(message)
    return int(found.group(2)) if found else None


class Estimator:
    """Tokens of a request from its characters: ``chars / chars_per_token``, where the ratio starts at
    ``CHARS_PER_TOKEN`` and follows the exact counts ``calibrate`` is given (a moving average)."""

    def __init__(self, chars_per_token: float = CHARS_PER_TOKEN) -> None:
        self.chars_per_token = chars_per_token

    def tokens(self, chars: int) -> int:
        return math.ceil(chars / self.chars_per_token)

    def chars(self, tokens: int) -> int:
        return int(tokens * self.chars_per_token)

    def calibrate(self, chars: int, counted: int) -> None:
        if chars > 0 and counted > 0:
            self.chars_per_token = (self.chars_per_token + chars / counted) / 2


def request_chars(messages: Sequence[ChatMessage], system: str | None, tools: Sequence[Mapping[str, Any]]) -> int:
    """The size of a request in characters of JSON (what ``Estimator`` turns into tokens)."""
    return len(json.dumps(list(messages))) + len(system or "") + (len(json.dumps(list(tools))) if tools else 0)


# --- the view -------------------------------------------------------------------------------------


def _details(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    details = event.get("corral_compaction")
    return details if event.get("type") == COMPACTED and isinstance(details, Mapping) else None


@dataclass(frozen=True)
class Compacted:
    """What the log's compaction events add up to."""

    cleared: frozenset[str] = frozenset()
    summary: str | None = None
    through: str | None = None
    start: int = 0
    """Index of the first event the view rebuilds (the one after ``through``)."""


def compacted(events: Sequence[LoggedEvent]) -> Compacted:
    """Fold the compaction events: every cleared result, and the newest summary (a summary names an
    event logged before it; one that does not is ignored)."""
    cleared: set[str] = set()
    positions: dict[str, int] = {}
    summary: str | None = None
    through: str | None = None
    start = 0
    for index, logged in enumerate(events):
        event = logged.event
        event_id = event.get("id")
        if isinstance(event_id, str):
            positions.setdefault(event_id, index)
        details = _details(event)
        if details is None:
            continue
        ids = details.get("cleared_tool_results")
        if isinstance(ids, list):
            cleared.update(i for i in ids if isinstance(i, str))
        last, text = details.get("summarized_through"), details.get("summary")
        if isinstance(last, str) and isinstance(text, str) and positions.get(last, index) < index:
            summary, through, start = text, last, positions[last] + 1
    return Compacted(frozenset(cleared), summary, through, start)


def _result_text(content: object) -> tuple[str, list[Block]]:
    """A result's text blocks joined, and its other blocks."""
    texts: list[str] = []
    others: list[Block] = []
    for block in content if isinstance(content, list) else ():
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block, dict):
            others.append(block)
    return "\n".join(texts), others


def shown(logged: LoggedEvent, cleared: frozenset[str], max_result_chars: int | None) -> LoggedEvent:
    """The event as the view shows it: a cleared result becomes its note, a long one is truncated."""
    event = logged.event
    event_id = event.get("id")
    if event.get("type") not in RESULT_TYPES or not isinstance(event_id, str):
        return logged
    if event_id in cleared:
        content: list[Block] = [{"type": "text", "text": cleared_note(event_id)}]
        return LoggedEvent(seq=logged.seq, event={**event, "content": content})
    text, others = _result_text(event.get("content"))
    if max_result_chars is None or len(text) <= max_result_chars:
        return logged
    cut = text[:max_result_chars] + "\n" + truncated_note(event_id, max_result_chars, len(text))
    return LoggedEvent(seq=logged.seq, event={**event, "content": [{"type": "text", "text": cut}, *others]})


def view(events: Sequence[LoggedEvent], *, max_result_chars: int | None = None) -> list[ChatMessage]:
    """The conversation a model request carries, given the log in order (see the module doc)."""
    state = compacted(events)
    messages = rebuild([shown(e, state.cleared, max_result_chars) for e in events[state.start :]])
    if state.summary is None or state.through is None:
        return messages
    head: ChatMessage = {
        "role": "user",
        "content": [{"type": "text", "text": summary_text(state.summary, state.through)}],
    }
    return merge([head, *messages])


# --- planning a compaction ----------------------------------------------------------------------------


def _weight(logged: LoggedEvent) -> int:
    """Characters an event adds to the view (0 for events that add nothing)."""
    event = logged.event
    kind = event.get("type")
    if kind in ("user.message", "agent.message") or kind in RESULT_TYPES:
        return len(json.dumps(event.get("content")))
    if kind in ("agent.tool_use", "agent.custom_tool_use"):
        return len(json.dumps(event.get("input"))) + 40
    return 0


def plan_clearing(
    events: Sequence[LoggedEvent], *, excess_chars: int, keep: int, max_result_chars: int | None
) -> list[str]:
    """Ids of the tool results to clear, oldest first, until they save ``excess_chars`` characters
    (or all but the newest ``keep`` are cleared). Results already cleared, summarised away, or too
    short to be worth a note are left alone."""
    state = compacted(events)
    candidates = [
        shown(e, state.cleared, max_result_chars)
        for e in events[state.start :]
        if e.event.get("type") in RESULT_TYPES
        and isinstance(e.event.get("id"), str)
        and e.event["id"] not in state.cleared
    ]
    candidates = candidates[: max(0, len(candidates) - keep)]
    chosen: list[str] = []
    saved = 0
    for logged in candidates:
        if saved >= excess_chars:
            break
        size = _weight(logged)
        note = len(json.dumps([{"type": "text", "text": cleared_note(str(logged.event["id"]))}]))
        if size < max(MIN_CLEARABLE_CHARS, note):
            continue
        chosen.append(str(logged.event["id"]))
        saved += size - note
    return chosen


def summary_cut(events: Sequence[LoggedEvent], *, keep_chars: int, max_result_chars: int | None) -> int | None:
    """Index of the first event to keep verbatim after a summary, or ``None`` if nothing more can be
    summarised.

    A cut is *clean* when it starts a turn (a user message, or a model reply) and every tool use before
    it has its answer before it, so the kept part is a valid conversation on its own. The earliest clean
    cut whose kept part weighs at most ``keep_chars`` wins (keeping as much as fits); failing that, the
    latest clean cut (keeping as little as can be).
    """
    state = compacted(events)
    open_uses: set[str] = set()
    cuts: list[int] = []
    for index in range(state.start, len(events)):
        event = events[index].event
        kind = event.get("type")
        starts_turn = kind in _STARTS_TURN and (kind != "user.message" or bool(event.get("content")))
        if index > state.start and starts_turn and not open_uses:
            cuts.append(index)
        if kind in ("agent.tool_use", "agent.custom_tool_use") and isinstance(event.get("id"), str):
            open_uses.add(event["id"])
        elif kind == "agent.tool_result":
            open_uses.discard(str(event.get("tool_use_id")))
        elif kind == "user.custom_tool_result":
            open_uses.discard(str(event.get("custom_tool_use_id")))
        elif kind == "user.tool_confirmation" and event.get("result") == "deny":
            open_uses.discard(str(event.get("tool_use_id")))
    if not cuts:
        return None
    weights = [_weight(shown(e, state.cleared, max_result_chars)) for e in events]
    suffix = 0
    kept_from: dict[int, int] = {}
    cut_set = set(cuts)
    for index in range(len(events) - 1, state.start - 1, -1):
        suffix += weights[index]
        if index in cut_set:
            kept_from[index] = suffix
    fitting = [cut for cut in cuts if kept_from[cut] <= keep_chars]
    return fitting[0] if fitting else cuts[-1]


def transcript(messages: Sequence[ChatMessage], *, max_chars: int) -> str:
    """The conversation as plain text for a summary request, clipped in the middle to ``max_chars``."""
    lines: list[str] = []
    for message in messages:
        for block in message["content"]:
            kind = block.get("type")
            if kind == "text":
                lines.append(f"{message['role']}: {block.get('text', '')}")
            elif kind == "tool_use":
                lines.append(f"assistant called {block.get('name')}: {json.dumps(block.get('input'))}")
            elif kind == "tool_result":
                text, _ = _result_text(block.get("content"))
                error = " (error)" if block.get("is_error") else ""
                lines.append(f"tool result{error}: {text}")
            else:
                lines.append(f"{message['role']}: [{kind} block]")
    text = "\n\n".join(lines)
    if len(text) <= max_chars:
        return text
    half = max(0, (max_chars - 60) // 2)
    return f"{text[:half]}\n\n[... {len(text) - 2 * half} characters left out ...]\n\n{text[len(text) - half :]}"


def compaction_details(
    *, cleared: Sequence[str] = (), through: str | None = None, summary: str | None = None
) -> dict[str, Any]:
    """The ``corral_compaction`` field of an ``agent.thread_context_compacted`` event."""
    details: dict[str, Any] = {"cleared_tool_results": list(cleared)}
    if through is not None and summary is not None:
        details["summarized_through"] = through
        details["summary"] = summary
    return details
