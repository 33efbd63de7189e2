"""Rebuild the Messages-API conversation from a session's log (pure: no I/O, no clock).

Log order is not conversation order. A ``user.message`` that arrives while a model request is in
flight is logged between that request's ``span.model_request_start`` and its
``span.model_request_end``, but the model never saw it: it belongs *after* the reply that request
produced. So each request's output goes right after the messages that existed at its start, and
input logged during the request is held back until the request ends. Consecutive turns of the
same role are merged, as the Messages API wants strictly alternating roles.

Anything the model cannot take (unknown event types, ``redacted`` blocks, empty text, malformed
blocks) is left out rather than failing the turn, so one bad event never wedges a session.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict

from pydantic import ValidationError

from corral.contracts.api.events import DocumentBlock, ImageBlock
from corral.contracts.rpc import LoggedEvent

Block = dict[str, Any]


class ChatMessage(TypedDict):
    """One Messages-API message (``MessageParam``)."""

    role: Literal["user", "assistant"]
    content: list[Block]


def _text_block(block: Mapping[str, Any]) -> Block | None:
    text = block.get("text")
    if isinstance(text, str) and text.strip():
        return {"type": "text", "text": text}
    return None


def user_blocks(content: object) -> list[Block]:
    """A ``user.message``'s content as Messages-API blocks: text, image and document pass through."""
    blocks: list[Block] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        converted: Block | None = None
        try:
            if kind == "text":
                converted = _text_block(block)
            elif kind == "image":
                converted = ImageBlock.model_validate(block).model_dump(mode="json", exclude_none=True)
            elif kind == "document":
                converted = DocumentBlock.model_validate(block).model_dump(mode="json", exclude_none=True)
        except ValidationError:
            converted = None
        if converted is not None:
            blocks.append(converted)
    return blocks


def agent_blocks(content: object) -> list[Block]:
    """An ``agent.message``'s content as assistant blocks (text only; ``redacted`` has no equivalent)."""
    blocks: list[Block] = []
    for block in content if isinstance(content, list) else ():
        if isinstance(block, dict) and block.get("type") == "text" and (text := _text_block(block)):
            blocks.append(text)
    return blocks


def merge(messages: Iterable[ChatMessage]) -> list[ChatMessage]:
    """Join consecutive messages of the same role into one (content in order)."""
    merged: list[ChatMessage] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1]["content"].extend(message["content"])
        else:
            merged.append({"role": message["role"], "content": list(message["content"])})
    return merged


def rebuild(events: Sequence[LoggedEvent]) -> list[ChatMessage]:
    """The conversation a model request should see, given the log in order.

    A ``span.model_request_start`` opens a request (and supersedes one still open: the harness that
    started it is gone, and the user messages held back so far were visible to the new request).
    User messages logged while a request is open are placed after its output, when its
    ``span.model_request_end`` arrives, or at the end when it never does.
    """
    ordered: list[ChatMessage] = []
    held_back: list[ChatMessage] = []
    open_request: str | None = None
    for logged in events:
        event = logged.event
        kind = event.get("type")
        if kind == "user.message":
            content = user_blocks(event.get("content"))
            if content:
                (held_back if open_request is not None else ordered).append({"role": "user", "content": content})
        elif kind == "agent.message":
            content = agent_blocks(event.get("content"))
            if content:
                ordered.append({"role": "assistant", "content": content})
        elif kind == "span.model_request_start":
            ordered.extend(held_back)
            held_back.clear()
            open_request = str(event.get("id"))
        elif kind == "span.model_request_end" and event.get("model_request_start_id") == open_request:
            ordered.extend(held_back)
            held_back.clear()
            open_request = None
    ordered.extend(held_back)
    return merge(ordered)
