"""Context management (pure: no I/O, no clock): what the model is shown of a long session, and how
it is made to fit the model's context window.

The log keeps everything; the conversation a model request carries is the fold's
(``corral.harness.conversation.ConversationBuilder``), which applies context management as it folds,
so any harness, resuming from a snapshot or folding from scratch, builds the same one without asking
the model again:

- **Compaction records decide what is shown.** ``agent.thread_context_compacted`` carries Corral's
  record of what was done (``corral_compaction``, see ``corral.contracts.api.events.CompactionDetails``):
  tool results cleared (shown as a note naming the result's event id) and, for a summary, the cut it
  ends at: the conversation is the newest summary, then the messages after that cut.
- **Large tool results are truncated** past ``max_result_chars`` characters, with a note naming the
  event that holds the whole result (a setting: harnesses of one deployment agree).

Fitting a request (``corral.harness.compaction`` runs this): past the budget, first clear old tool
results (oldest first, keeping the newest ``keep`` ones: ``plan_clearing`` over the fold's
``tool_results()``); if that is not enough, summarise the oldest turns (``summary_cut`` picks among the
fold's ``cuts()``; ``transcript`` is what the separate-context summary request reads). All of it reads
what the fold keeps, the conversation, never the log: a step costs the same however long the session.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from corral.harness.conversation import Cut
from corral.harness.messageblocks import ChatMessage
from corral.harness.toolanswers import cleared_note, result_text

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


def request_chars(messages_chars: int, system: str | None, tools: Sequence[Mapping[str, Any]]) -> int:
    """The size of a request in characters of JSON (what ``Estimator`` turns into tokens), given its
    messages' (``ConversationBuilder.chars()``: ``len(json.dumps(messages))``, kept as the fold grows)."""
    return messages_chars + len(system or "") + (len(json.dumps(list(tools))) if tools else 0)


# --- planning a compaction ----------------------------------------------------------------------------


def plan_clearing(results: Sequence[tuple[str, int]], *, excess_chars: int, keep: int) -> list[str]:
    """Ids of the tool results to clear, oldest first, until they save ``excess_chars`` characters
    (or all but the newest ``keep`` are cleared). ``results``: the fold's ``tool_results()`` (those not
    cleared yet, with the characters each shows); one too short to be worth a note is left alone."""
    candidates = list(results)[: max(0, len(results) - keep)]
    chosen: list[str] = []
    saved = 0
    for event_id, size in candidates:
        if saved >= excess_chars:
            break
        note = len(json.dumps([{"type": "text", "text": cleared_note(event_id)}]))
        if size < max(MIN_CLEARABLE_CHARS, note):
            continue
        chosen.append(event_id)
        saved += size - note
    return chosen


def summary_cut(cuts: Sequence[Cut], *, keep_chars: int) -> Cut | None:
    """Where a summary should end, among the fold's ``cuts()`` (oldest first); ``None`` if nothing can
    be summarised.

    Every cut keeps a valid conversation (it starts a turn and separates no tool use from its result).
    The earliest cut whose kept part weighs at most ``keep_chars`` wins (keeping as much as fits);
    failing that, the latest (keeping as little as can be).
    """
    if not cuts:
        return None
    fitting = [cut for cut in cuts if cut.kept_chars <= keep_chars]
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
                text, _ = result_text(block.get("content"))
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
    *,
    cleared: Sequence[str] = (),
    through: str | None = None,
    summary: str | None = None,
    summary_usage: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The ``corral_compaction`` field of an ``agent.thread_context_compacted`` event."""
    details: dict[str, Any] = {"cleared_tool_results": list(cleared)}
    if through is not None and summary is not None:
        details["summarized_through"] = through
        details["summary"] = summary
    if summary_usage:
        details["summary_usage"] = dict(summary_usage)
    return details
