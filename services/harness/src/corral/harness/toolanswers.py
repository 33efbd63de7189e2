"""The answers to a conversation's tool uses, and how a tool result is shown (pure).

An answer is the first of: an ``agent.tool_result``, a ``user.custom_tool_result``, and, for a call
the user denied, the denial itself. A result longer than ``max_result_chars`` characters of text is
shown truncated, and one a compaction cleared is shown as a note; both notes name the event that
keeps the whole result in the session log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from corral.harness.messageblocks import NO_RESULT, Block, denial_content, tool_result_block


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


def result_text(content: object) -> tuple[str, list[Block]]:
    """A result's text blocks joined, and its other blocks."""
    texts: list[str] = []
    others: list[Block] = []
    for block in content if isinstance(content, list) else ():
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block, dict):
            others.append(block)
    return "\n".join(texts), others


def shown_result(event_id: object, content: object, max_result_chars: int | None) -> object:
    """A result's content as the conversation shows it: past ``max_result_chars`` characters of text,
    truncated with a note naming the event that holds it whole."""
    if max_result_chars is None or not isinstance(event_id, str):
        return content
    text, others = result_text(content)
    if len(text) <= max_result_chars:
        return content
    cut = text[:max_result_chars] + "\n" + truncated_note(event_id, max_result_chars, len(text))
    return [{"type": "text", "text": cut}, *others]


def weight(content: object) -> int:
    """Characters a block list adds to a request (its JSON)."""
    return len(json.dumps(content))


class Answers:
    """The answer to each tool use, by tool use id: the first result wins; a denial only fills a gap.

    ``by_event`` names each winning result by its event id (what a compaction clears), in arrival
    order; ``cleared`` holds those shown as a note.
    """

    def __init__(self, max_result_chars: int | None = None) -> None:
        self.max_result_chars = max_result_chars
        self.results: dict[str, Block] = {}
        self.denials: dict[str, Block] = {}
        self.by_event: dict[str, str] = {}
        self.cleared: set[str] = set()

    def add(self, event: Mapping[str, Any]) -> str | None:
        """Take an answer; the tool use id whose answer may have changed, if any."""
        kind = event.get("type")
        if kind == "agent.tool_result":
            return self._result(event, event.get("tool_use_id"))
        if kind == "user.custom_tool_result":
            return self._result(event, event.get("custom_tool_use_id"))
        if kind == "agent.mcp_tool_result":
            return self._result(event, event.get("mcp_tool_use_id"))
        if kind == "user.tool_confirmation" and event.get("result") == "deny":
            tool_use_id = event.get("tool_use_id")
            message = event.get("deny_message")
            if isinstance(tool_use_id, str) and tool_use_id not in self.denials:
                content = denial_content(message if isinstance(message, str) else None)
                self.denials[tool_use_id] = tool_result_block(tool_use_id, content, is_error=True)
                return tool_use_id
        return None

    def _result(self, event: Mapping[str, Any], tool_use_id: object) -> str | None:
        if isinstance(tool_use_id, str) and tool_use_id not in self.results:
            event_id = event.get("id")
            content = shown_result(event_id, event.get("content"), self.max_result_chars)
            self.results[tool_use_id] = tool_result_block(tool_use_id, content, is_error=event.get("is_error") is True)
            if isinstance(event_id, str) and event_id not in self.by_event:
                self.by_event[event_id] = tool_use_id
            return tool_use_id
        return None

    def clear(self, event_id: str) -> str | None:
        """Show the result ``event_id`` as a note; the tool use id whose answer changed, if any."""
        tool_use_id = self.by_event.get(event_id)
        if tool_use_id is None or event_id in self.cleared:
            return None
        self.cleared.add(event_id)
        note = [{"type": "text", "text": cleared_note(event_id)}]
        is_error = self.results[tool_use_id].get("is_error") is True
        self.results[tool_use_id] = tool_result_block(tool_use_id, note, is_error=is_error)
        return tool_use_id

    def forget(self, tool_use_ids: set[str]) -> None:
        """Drop the answers of tool uses no longer in the conversation (summarised away)."""
        for tool_use_id in tool_use_ids:
            self.results.pop(tool_use_id, None)
            self.denials.pop(tool_use_id, None)
        for event_id in [e for e, t in self.by_event.items() if t in tool_use_ids]:
            del self.by_event[event_id]
            self.cleared.discard(event_id)

    def block(self, tool_use_id: str) -> Block:
        found = self.results.get(tool_use_id) or self.denials.get(tool_use_id)
        if found is not None:
            return dict(found)
        return tool_result_block(tool_use_id, [{"type": "text", "text": NO_RESULT}], is_error=True)
