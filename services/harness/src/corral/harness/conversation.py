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

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, TypedDict

from pydantic import ValidationError

from corral.contracts.api.events import DocumentBlock, ImageBlock, SearchResultBlock
from corral.contracts.rpc import LoggedEvent

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
            except ValidationError:
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

    def add(self, event: Mapping[str, Any]) -> str | None:
        """Take an answer; the tool use id whose answer may have changed, if any."""
        kind = event.get("type")
        if kind == "agent.tool_result":
            return self._result(event.get("tool_use_id"), event.get("content"), event.get("is_error") is True)
        if kind == "user.custom_tool_result":
            return self._result(event.get("custom_tool_use_id"), event.get("content"), event.get("is_error") is True)
        if kind == "user.tool_confirmation" and event.get("result") == "deny":
            tool_use_id = event.get("tool_use_id")
            message = event.get("deny_message")
            if isinstance(tool_use_id, str) and tool_use_id not in self.denials:
                content = denial_content(message if isinstance(message, str) else None)
                self.denials[tool_use_id] = tool_result_block(tool_use_id, content, is_error=True)
                return tool_use_id
        return None

    def _result(self, tool_use_id: object, content: object, is_error: bool) -> str | None:
        if isinstance(tool_use_id, str) and tool_use_id not in self.results:
            self.results[tool_use_id] = tool_result_block(tool_use_id, content, is_error=is_error)
            return tool_use_id
        return None

    def block(self, tool_use_id: str) -> Block:
        found = self.results.get(tool_use_id) or self.denials.get(tool_use_id)
        if found is not None:
            return dict(found)
        return tool_result_block(tool_use_id, [{"type": "text", "text": NO_RESULT}], is_error=True)


class ConversationBuilder:
    """The conversation a model request should see, built as the log is read, one event at a time.

    A ``span.model_request_start`` opens a request (and supersedes one still open: the harness that
    started it is gone, and the user messages held back so far were visible to the new request).
    User messages logged while a request is open are placed after its output (and after the results
    of the tools it called), when its ``span.model_request_end`` arrives, or at the end when it
    never does.

    Append-only: ``apply`` only adds to the end of the messages placed so far (merging same-role
    turns as it goes); the answer to a tool use placed before its result arrived is filled in
    place. ``messages()`` adds what is still held back, without changing the builder, so each event
    costs the same however long the log is. ``state()``/``restore()`` carry the builder in a
    snapshot (JSON-ready).
    """

    def __init__(self) -> None:
        self._placed: list[ChatMessage] = []
        self._held_back: list[ChatMessage] = []
        self._unplaced: list[str] = []
        self._answers = _Answers()
        self._open_request: str | None = None
        self._slots: dict[str, list[tuple[int, int]]] = {}
        """Where each placed ``tool_result`` block sits: (message index, block index), by tool use id."""

    def apply(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "user.message":
            content = user_blocks(event.get("content"))
            if content and self._open_request is not None:
                self._held_back.append({"role": "user", "content": content})
            elif content:
                self._place_results()
                self._place({"role": "user", "content": content})
        elif kind == "agent.message":
            content = agent_blocks(event.get("content"))
            if content:
                self._place_results()
                self._place({"role": "assistant", "content": content})
        elif kind in ("agent.tool_use", "agent.custom_tool_use"):
            block = _tool_use_block(event)
            if block is not None and block["id"] not in self._unplaced:
                self._place({"role": "assistant", "content": [block]})
                self._unplaced.append(block["id"])
        elif kind in ("agent.tool_result", "user.custom_tool_result", "user.tool_confirmation"):
            touched = self._answers.add(event)
            if touched is not None:
                for mi, bi in self._slots.get(touched, ()):
                    self._placed[mi]["content"][bi] = self._answers.block(touched)
        elif kind == "span.model_request_start":
            self._release()
            self._open_request = str(event.get("id"))
        elif kind == "span.model_request_end" and event.get("model_request_start_id") == self._open_request:
            self._release()
            self._open_request = None

    def messages(self) -> list[ChatMessage]:
        """The conversation so far, with what is still held back placed at the end."""
        tail: list[ChatMessage] = []
        if self._unplaced:
            tail.append({"role": "user", "content": [self._answers.block(i) for i in self._unplaced]})
        tail.extend(self._held_back)
        out = list(self._placed)
        for message in tail:
            if out and out[-1]["role"] == message["role"]:
                out[-1] = {"role": message["role"], "content": [*out[-1]["content"], *message["content"]]}
            else:
                out.append({"role": message["role"], "content": list(message["content"])})
        return out

    def _place(self, message: ChatMessage) -> tuple[int, int]:
        """Append ``message`` (merged into the last one when of the same role); where its first block went."""
        if self._placed and self._placed[-1]["role"] == message["role"]:
            last = self._placed[-1]
            at = (len(self._placed) - 1, len(last["content"]))
            last["content"].extend(message["content"])
        else:
            at = (len(self._placed), 0)
            self._placed.append({"role": message["role"], "content": list(message["content"])})
        return at

    def _place_results(self) -> None:
        if not self._unplaced:
            return
        ids = list(self._unplaced)
        self._unplaced.clear()
        mi, bi = self._place({"role": "user", "content": [self._answers.block(i) for i in ids]})
        for offset, tool_use_id in enumerate(ids):
            self._slots.setdefault(tool_use_id, []).append((mi, bi + offset))

    def _release(self) -> None:
        self._place_results()
        for message in self._held_back:
            self._place(message)
        self._held_back.clear()

    def state(self) -> dict[str, Any]:
        return {
            "placed": self._placed,
            "held_back": self._held_back,
            "unplaced": self._unplaced,
            "results": self._answers.results,
            "denials": self._answers.denials,
            "open_request": self._open_request,
            "slots": self._slots,
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> ConversationBuilder:
        builder = cls()
        builder._placed = list(state["placed"])
        builder._held_back = list(state["held_back"])
        builder._unplaced = list(state["unplaced"])
        builder._answers.results = dict(state["results"])
        builder._answers.denials = dict(state["denials"])
        builder._open_request = state["open_request"]
        builder._slots = {k: [(int(mi), int(bi)) for mi, bi in v] for k, v in state["slots"].items()}
        return builder


def rebuild(events: Sequence[LoggedEvent]) -> list[ChatMessage]:
    """The conversation a model request should see, given the whole log in order."""
    builder = ConversationBuilder()
    for logged in events:
        builder.apply(logged.event)
    return builder.messages()
