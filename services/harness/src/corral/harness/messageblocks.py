"""Session events' content as Messages-API blocks (pure: no I/O, no clock).

What the conversation (``corral.harness.conversation``) is built from: a ``user.message``'s text,
image and document blocks; an ``agent.message``'s text; tool uses and the ``tool_result`` blocks that
answer them. Anything the model cannot take (unknown block types, ``redacted`` blocks, empty text,
malformed blocks) is left out, with a warning naming its type (never its content), rather than
failing the turn, so one bad event never wedges a session.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, TypedDict

from pydantic import ValidationError

from corral.contracts.api.events import DocumentBlock, ImageBlock, SearchResultBlock
from corral.harness.mcptools import model_tool_name

logger = logging.getLogger(__name__)

Block = dict[str, Any]

DENIED: Final = "The user denied this tool call."
NO_RESULT: Final = "No result was recorded for this tool call."


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
        except ValidationError as exc:
            _dropped(kind, f"not a valid {kind} block: {exc.error_count()} error(s), first: {exc.errors()[0]['msg']}")
            continue
        if converted is not None:
            blocks.append(converted)
        elif kind != "text":  # an empty text block is left out on purpose
            _dropped(kind, "the Messages API has no such user content block")
    return blocks


def _dropped(kind: object, why: str) -> None:
    """A logged block the model is not shown: say which and why (never its content)."""
    logger.warning("content block left out of the conversation", extra={"fields": {"type": str(kind), "why": why}})


def agent_blocks(content: object) -> list[Block]:
    """An ``agent.message``'s content as assistant blocks (text only; ``redacted`` has no equivalent)."""
    blocks: list[Block] = []
    for block in content if isinstance(content, list) else ():
        if isinstance(block, dict) and block.get("type") == "text" and (text := _text_block(block)):
            blocks.append(text)
    return blocks


def denial_content(deny_message: str | None = None) -> list[Block]:
    """What the model is told about a call the user denied (and the text of its ``agent.tool_result``)."""
    content: list[Block] = [{"type": "text", "text": DENIED}]
    if deny_message and deny_message.strip():
        content.append({"type": "text", "text": deny_message})
    return content


def result_blocks(content: object) -> list[Block]:
    """A tool result's content as Messages-API ``tool_result`` content: text, image, document and
    search_result blocks."""
    blocks: list[Block] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "search_result":
            try:
                blocks.append(SearchResultBlock.model_validate(block).model_dump(mode="json", exclude_none=True))
            except ValidationError as exc:
                _dropped("search_result", f"not a valid search_result block: {exc.errors()[0]['msg']}")
                continue
        else:
            blocks.extend(user_blocks([block]))
    return blocks


def tool_result_block(tool_use_id: str, content: object, *, is_error: bool) -> Block:
    """One ``tool_result`` block; ``is_error`` appears only when true, empty content is left out."""
    block: Block = {"type": "tool_result", "tool_use_id": tool_use_id}
    blocks = result_blocks(content)
    if blocks:
        block["content"] = blocks
    if is_error:
        block["is_error"] = True
    return block


def merge(messages: Iterable[ChatMessage]) -> list[ChatMessage]:
    """Join consecutive messages of the same role into one (content in order)."""
    merged: list[ChatMessage] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1]["content"].extend(message["content"])
        else:
            merged.append({"role": message["role"], "content": list(message["content"])})
    return merged


def joined(messages: list[ChatMessage]) -> list[ChatMessage]:
    """``messages`` with consecutive ones of the same role joined into new messages (never changing
    the ones given, unlike ``merge``: those may be a conversation's kept messages)."""
    out: list[ChatMessage] = []
    for message in messages:
        if out and out[-1]["role"] == message["role"]:
            out[-1] = {"role": message["role"], "content": [*out[-1]["content"], *message["content"]]}
        else:
            out.append(message)
    return out


def tool_use_block(event: Mapping[str, Any]) -> Block | None:
    event_id, name, tool_input = event.get("id"), event.get("name"), event.get("input")
    if not isinstance(event_id, str) or not event_id or not isinstance(name, str) or not name:
        return None
    if event.get("type") == "agent.mcp_tool_use":
        name = model_tool_name(str(event.get("mcp_server_name")), name)
    return {
        "type": "tool_use",
        "id": event_id,
        "name": name,
        "input": tool_input if isinstance(tool_input, dict) else {},
    }
