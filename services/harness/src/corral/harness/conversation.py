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

import copy
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict

from pydantic import ValidationError

from corral.contracts.api.events import DocumentBlock, ImageBlock, SearchResultBlock
from corral.contracts.rpc import LoggedEvent
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


def _tool_use_block(event: Mapping[str, Any]) -> Block | None:
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


COMPACTED: Final = "agent.thread_context_compacted"
RESULT_TYPES: Final = frozenset({"agent.tool_result", "user.custom_tool_result", "agent.mcp_tool_result"})


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


class _Answers:
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


@dataclass(frozen=True)
class Cut:
    """Where a summary may end: the messages from ``index`` on are kept verbatim, the ones before are
    replaced. ``through`` is the id a compaction names for it (``summarized_through``); ``kept_chars``
    what the kept part (and everything still held back) weighs."""

    index: int
    through: str
    kept_chars: int


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

    Context management is part of the fold, so any harness (from a snapshot or from scratch) builds
    the same conversation:

    - a tool result longer than ``max_result_chars`` characters of text is truncated with a note
      naming its event (a setting: the harnesses of one deployment agree; a snapshot taken with
      another value is not used);
    - an ``agent.thread_context_compacted`` record's ``cleared_tool_results`` are shown as a note
      naming the result's event (results folded before the record; others are left alone);
    - its ``summary`` replaces the placed messages before a *cut*: each placed message that starts a
      turn and holds no tool result (so no tool use is separated from its result) is a cut, named by
      the id of the event folded just before the event that placed it (``summarized_through``: the
      summary covers the log up to that event). A record naming no cut of the current conversation
      changes nothing. The newest summary heads the conversation; the replaced messages are
      dropped from the fold.
    """

    def __init__(self, *, max_result_chars: int | None = None) -> None:
        self._placed: list[ChatMessage] = []
        self._origins: list[str | None] = []
        """For each placed message, the id of the event folded before the one that placed it."""
        self._held_back: list[ChatMessage] = []
        self._unplaced: list[str] = []
        self._answers = _Answers(max_result_chars)
        self._open_request: str | None = None
        self._slots: dict[str, list[tuple[int, int]]] = {}
        """Where each placed ``tool_result`` block sits: (message index, block index), by tool use id."""
        self._summary: tuple[str, str] | None = None
        """The newest summary and the event it covers the log through."""
        self._before: str | None = None
        """The id of the event folded before the one being folded."""
        self._last_id: str | None = None

    @property
    def max_result_chars(self) -> int | None:
        return self._answers.max_result_chars

    def apply(self, event: Mapping[str, Any]) -> None:
        self._before = self._last_id
        event_id = event.get("id")
        if isinstance(event_id, str):
            self._last_id = event_id
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
        elif kind in ("agent.tool_use", "agent.custom_tool_use", "agent.mcp_tool_use"):
            block = _tool_use_block(event)
            if block is not None and block["id"] not in self._unplaced:
                self._place({"role": "assistant", "content": [block]})
                self._unplaced.append(block["id"])
        elif kind in (
            "agent.tool_result",
            "user.custom_tool_result",
            "agent.mcp_tool_result",
            "user.tool_confirmation",
        ):
            self._refill(self._answers.add(event))
        elif kind == "span.model_request_start":
            self._release()
            self._open_request = str(event.get("id"))
        elif kind == "span.model_request_end" and event.get("model_request_start_id") == self._open_request:
            self._release()
            self._open_request = None
        elif kind == COMPACTED and isinstance(details := event.get("corral_compaction"), Mapping):
            self._compact(details)

    def messages(self) -> list[ChatMessage]:
        """The conversation so far, with what is still held back placed at the end."""
        out: list[ChatMessage] = self._head()
        for message in [*self._placed, *self._tail()]:
            if out and out[-1]["role"] == message["role"]:
                out[-1] = {"role": message["role"], "content": [*out[-1]["content"], *message["content"]]}
            else:
                out.append(message)
        return out

    def _head(self) -> list[ChatMessage]:
        if self._summary is None:
            return []
        return [{"role": "user", "content": [{"type": "text", "text": summary_text(*self._summary)}]}]

    def _tail(self) -> list[ChatMessage]:
        tail: list[ChatMessage] = []
        if self._unplaced:
            tail.append({"role": "user", "content": [self._answers.block(i) for i in self._unplaced]})
        tail.extend(self._held_back)
        return tail

    # --- what context management reads (all linear in the conversation kept, not the log) ------------
    def tool_results(self) -> list[tuple[str, int]]:
        """The results in the conversation not cleared yet, oldest first: (event id, characters shown)."""
        return [
            (event_id, weight(self._answers.results[tool_use_id].get("content", [])))
            for event_id, tool_use_id in self._answers.by_event.items()
            if event_id not in self._answers.cleared
        ]

    def cuts(self) -> list[Cut]:
        """Where a summary may end, oldest first (see the class doc)."""
        kept = sum(weight(m["content"]) for m in self._tail())
        found: list[Cut] = []
        for index in range(len(self._placed) - 1, 0, -1):
            message = self._placed[index]
            kept += weight(message["content"])
            origin = self._origins[index]
            if origin is not None and not any(b.get("type") == "tool_result" for b in message["content"]):
                found.append(Cut(index, origin, kept))
        found.reverse()
        return found

    def head(self, index: int) -> list[ChatMessage]:
        """The conversation a summary ending at cut ``index`` replaces (the current summary included)."""
        return merge([*self._head(), *self._placed[:index]])

    def copy(self) -> ConversationBuilder:
        """An independent copy (to try a compaction on before it is logged)."""
        return ConversationBuilder.restore(copy.deepcopy(self.state()))

    # --- internals ---------------------------------------------------------------------------------------
    def _place(self, message: ChatMessage) -> tuple[int, int]:
        """Append ``message`` (merged into the last one when of the same role); where its first block went."""
        if self._placed and self._placed[-1]["role"] == message["role"]:
            last = self._placed[-1]
            at = (len(self._placed) - 1, len(last["content"]))
            last["content"].extend(message["content"])
        else:
            at = (len(self._placed), 0)
            self._placed.append({"role": message["role"], "content": list(message["content"])})
            self._origins.append(self._before)
        return at

    def _refill(self, touched: str | None) -> None:
        if touched is not None:
            for mi, bi in self._slots.get(touched, ()):
                self._placed[mi]["content"][bi] = self._answers.block(touched)

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

    def _compact(self, details: Mapping[str, Any]) -> None:
        cleared = details.get("cleared_tool_results")
        for event_id in cleared if isinstance(cleared, list) else ():
            if isinstance(event_id, str):
                self._refill(self._answers.clear(event_id))
        through, summary = details.get("summarized_through"), details.get("summary")
        if not isinstance(through, str) or not isinstance(summary, str):
            return
        index = next((cut.index for cut in self.cuts() if cut.through == through), None)
        if index is None:
            return
        self._summary = (summary, through)
        self._placed = self._placed[index:]
        self._origins = self._origins[index:]
        dropped: set[str] = set()
        slots: dict[str, list[tuple[int, int]]] = {}
        for tool_use_id, places in self._slots.items():
            kept = [(mi - index, bi) for mi, bi in places if mi >= index]
            if kept:
                slots[tool_use_id] = kept
            else:
                dropped.add(tool_use_id)
        self._slots = slots
        self._answers.forget(dropped - set(self._unplaced))

    def state(self) -> dict[str, Any]:
        return {
            "placed": self._placed,
            "origins": self._origins,
            "held_back": self._held_back,
            "unplaced": self._unplaced,
            "results": self._answers.results,
            "denials": self._answers.denials,
            "by_event": self._answers.by_event,
            "cleared": sorted(self._answers.cleared),
            "max_result_chars": self._answers.max_result_chars,
            "open_request": self._open_request,
            "slots": self._slots,
            "summary": list(self._summary) if self._summary is not None else None,
            "last_id": self._last_id,
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> ConversationBuilder:
        max_chars = state["max_result_chars"]
        builder = cls(max_result_chars=None if max_chars is None else int(max_chars))
        builder._placed = list(state["placed"])
        builder._origins = list(state["origins"])
        if len(builder._origins) != len(builder._placed):
            raise ValueError("a conversation state whose origins do not match its messages")
        builder._held_back = list(state["held_back"])
        builder._unplaced = list(state["unplaced"])
        builder._answers.results = dict(state["results"])
        builder._answers.denials = dict(state["denials"])
        builder._answers.by_event = dict(state["by_event"])
        builder._answers.cleared = set(state["cleared"])
        builder._open_request = state["open_request"]
        builder._slots = {k: [(int(mi), int(bi)) for mi, bi in v] for k, v in state["slots"].items()}
        summary = state["summary"]
        builder._summary = (str(summary[0]), str(summary[1])) if summary is not None else None
        builder._last_id = state["last_id"]
        return builder


def rebuild(events: Sequence[LoggedEvent], *, max_result_chars: int | None = None) -> list[ChatMessage]:
    """The conversation a model request should see, given the whole log in order (compactions and
    truncation applied as the incremental fold applies them)."""
    builder = ConversationBuilder(max_result_chars=max_result_chars)
    for logged in events:
        builder.apply(logged.event)
    return builder.messages()
