"""Rebuild the Messages-API conversation from a session's log (pure: no I/O, no clock).

Log order is not conversation order. A ``user.message`` that arrives while a model request is in
flight is logged between that request's ``span.model_request_start`` and its
``span.model_request_end``, but the model never saw it: it belongs *after* the reply that request
produced. So each request's output goes right after the messages that existed at its start, and
input logged during the request is held back until the request ends. Consecutive turns of the
same role are merged, as the Messages API wants strictly alternating roles.

Tool calls: ``agent.tool_use`` and ``agent.custom_tool_use`` become assistant ``tool_use`` blocks
whose ``id`` is the event id (the model's own ``toolu_`` ids are not kept; ids only have to match
between a use and its result). Their answers become ``tool_result`` blocks, all of them in the user
turn right after that assistant turn, in tool-use order and ahead of any text the user sent
meanwhile, as the Messages API requires. An answer is the first of: an ``agent.tool_result``, a
``user.custom_tool_result``, and, for a call the user denied, the denial itself (the harness also
logs it as an ``agent.tool_result``, with the same text). A call with no answer at all gets an
error result, so the conversation stays valid whatever the log holds.

Anything the model cannot take (unknown event types, ``redacted`` blocks, empty text, malformed
blocks) is left out rather than failing the turn, so one bad event never wedges a session.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict

from pydantic import ValidationError

from corral.contracts.api.events import DocumentBlock, ImageBlock, SearchResultBlock
from corral.contracts.rpc import LoggedEvent

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


@dataclass(frozen=True)
class _Results:
    """Where the results of a run of tool uses go: the user turn right after them."""

    tool_use_ids: tuple[str, ...]


def _tool_use_block(event: Mapping[str, Any]) -> Block | None:
    event_id, name, tool_input = event.get("id"), event.get("name"), event.get("input")
    if not isinstance(event_id, str) or not event_id or not isinstance(name, str) or not name:
        return None
    return {
        "type": "tool_use",
        "id": event_id,
        "name": name,
        "input": tool_input if isinstance(tool_input, dict) else {},
    }


class _Answers:
    """The answer to each tool use, by tool use id: the first result wins; a denial only fills a gap."""

    def __init__(self) -> None:
        self.results: dict[str, Block] = {}
        self.denials: dict[str, Block] = {}

    def add(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "agent.tool_result":
            self._result(event.get("tool_use_id"), event.get("content"), event.get("is_error") is True)
        elif kind == "user.custom_tool_result":
            self._result(event.get("custom_tool_use_id"), event.get("content"), event.get("is_error") is True)
        elif kind == "user.tool_confirmation" and event.get("result") == "deny":
            tool_use_id = event.get("tool_use_id")
            message = event.get("deny_message")
            if isinstance(tool_use_id, str) and tool_use_id not in self.denials:
                content = denial_content(message if isinstance(message, str) else None)
                self.denials[tool_use_id] = tool_result_block(tool_use_id, content, is_error=True)

    def _result(self, tool_use_id: object, content: object, is_error: bool) -> None:
        if isinstance(tool_use_id, str) and tool_use_id not in self.results:
            self.results[tool_use_id] = tool_result_block(tool_use_id, content, is_error=is_error)

    def block(self, tool_use_id: str) -> Block:
        found = self.results.get(tool_use_id) or self.denials.get(tool_use_id)
        if found is not None:
            return dict(found)
        return tool_result_block(tool_use_id, [{"type": "text", "text": NO_RESULT}], is_error=True)


def rebuild(events: Sequence[LoggedEvent]) -> list[ChatMessage]:
    """The conversation a model request should see, given the log in order.

    A ``span.model_request_start`` opens a request (and supersedes one still open: the harness that
    started it is gone, and the user messages held back so far were visible to the new request).
    User messages logged while a request is open are placed after its output (and after the results
    of the tools it called), when its ``span.model_request_end`` arrives, or at the end when it
    never does.
    """
    ordered: list[ChatMessage | _Results] = []
    held_back: list[ChatMessage] = []
    unplaced: list[str] = []
    answers = _Answers()
    open_request: str | None = None

    def place_results() -> None:
        if unplaced:
            ordered.append(_Results(tuple(unplaced)))
            unplaced.clear()

    def release() -> None:
        place_results()
        ordered.extend(held_back)
        held_back.clear()

    for logged in events:
        event = logged.event
        kind = event.get("type")
        if kind == "user.message":
            content = user_blocks(event.get("content"))
            if content and open_request is not None:
                held_back.append({"role": "user", "content": content})
            elif content:
                place_results()
                ordered.append({"role": "user", "content": content})
        elif kind == "agent.message":
            content = agent_blocks(event.get("content"))
            if content:
                place_results()
                ordered.append({"role": "assistant", "content": content})
        elif kind in ("agent.tool_use", "agent.custom_tool_use"):
            block = _tool_use_block(event)
            if block is not None and block["id"] not in unplaced:
                ordered.append({"role": "assistant", "content": [block]})
                unplaced.append(block["id"])
        elif kind in ("agent.tool_result", "user.custom_tool_result", "user.tool_confirmation"):
            answers.add(event)
        elif kind == "span.model_request_start":
            release()
            open_request = str(event.get("id"))
        elif kind == "span.model_request_end" and event.get("model_request_start_id") == open_request:
            release()
            open_request = None
    release()
    messages: list[ChatMessage] = []
    for item in ordered:
        if isinstance(item, _Results):
            messages.append({"role": "user", "content": [answers.block(i) for i in item.tool_use_ids]})
        else:
            messages.append(item)
    return merge(messages)
