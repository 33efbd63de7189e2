"""A streamed reply's events folded into a ``ModelReply`` as they arrive (pure).

What the harness keeps of a reply: its text blocks (each chunk told as it comes), its ``tool_use``
blocks (name, and input from its streamed JSON), the tokens used and why it stopped. Other blocks
(thinking, a server tool's) and deltas are passed over, as the turn has no use for them. A reply
must end with ``message_stop``: one cut short is not taken for a whole one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from corral.contracts.api.events import ModelUsage
from corral.contracts.text import well_formed
from corral.harness.model import ModelError, ModelReply, ToolRequest

Event = dict[str, Any]


@dataclass
class _Text:
    parts: list[str] = field(default_factory=list)


@dataclass
class _ToolUse:
    name: str
    input: Any
    json: list[str] = field(default_factory=list)

    def arguments(self) -> dict[str, Any]:
        """The input the model wrote: its streamed JSON (the start's ``input`` when none streamed)."""
        written = "".join(self.json)
        try:
            value = json.loads(written) if written else self.input
        except ValueError:
            value = None
        return well_formed(dict(value)) if isinstance(value, dict) else {}


_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def token_counts(usage: Any) -> dict[str, int]:
    """The token counts a Messages ``usage`` object holds (a missing or null count is left out)."""
    if not isinstance(usage, dict):
        return {}
    return {name: value for name in _USAGE_FIELDS if isinstance(value := usage.get(name), int)}


class ReplyFold:
    """Feed it each event (``add``); ``reply()`` once the stream has ended."""

    def __init__(self) -> None:
        self._blocks: dict[int, _Text | _ToolUse] = {}
        self._ordinals: dict[int, int] = {}
        self._usage = dict.fromkeys(_USAGE_FIELDS, 0)
        self._stop_reason: str | None = None
        self._stopped = False

    def add(self, event: Event) -> tuple[int, str] | None:
        """Fold ``event`` in; a text chunk comes back as (the text block's ordinal in the reply, the
        chunk made well-formed) for the caller to pass on."""
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._delta(event.get("index"), event.get("delta") or {})
        if kind == "content_block_start":
            self._start(event.get("index"), event.get("content_block") or {})
        elif kind == "message_start":
            self._count((event.get("message") or {}).get("usage"))
        elif kind == "message_delta":
            self._stop_reason = (event.get("delta") or {}).get("stop_reason") or self._stop_reason
            self._count(event.get("usage"))
        elif kind == "message_stop":
            self._stopped = True
        return None

    def _start(self, index: Any, block: Event) -> None:
        if not isinstance(index, int):
            return
        if block.get("type") == "text":
            self._blocks[index] = _Text([str(block.get("text") or "")])
        elif block.get("type") == "tool_use":
            self._blocks[index] = _ToolUse(name=str(block.get("name") or ""), input=block.get("input"))

    def _delta(self, index: Any, delta: Event) -> tuple[int, str] | None:
        if not isinstance(index, int):
            return None
        block = self._blocks.get(index)
        kind = delta.get("type")
        if isinstance(block, _Text) and kind == "text_delta":
            text = str(delta.get("text") or "")
            block.parts.append(text)
            if text:
                return self._ordinals.setdefault(index, len(self._ordinals)), well_formed(text)
        elif isinstance(block, _ToolUse) and kind == "input_json_delta":
            block.json.append(str(delta.get("partial_json") or ""))
        return None

    def _count(self, usage: Any) -> None:
        self._usage.update(token_counts(usage))

    def reply(self) -> ModelReply:
        """The reply; raises ``ModelError`` (retryable) when the stream ended before ``message_stop``."""
        if not self._stopped:
            raise ModelError(
                "model_request_failed_error", "The model API's reply ended before it was complete.", retryable=True
            )
        blocks = [self._blocks[index] for index in sorted(self._blocks)]
        texts = tuple(
            well_formed(text) for block in blocks if isinstance(block, _Text) and (text := "".join(block.parts))
        )
        tool_uses = tuple(
            ToolRequest(name=well_formed(block.name), input=block.arguments())
            for block in blocks
            if isinstance(block, _ToolUse)
        )
        return ModelReply(
            texts=texts, usage=ModelUsage(**self._usage), stop_reason=self._stop_reason, tool_uses=tool_uses
        )
