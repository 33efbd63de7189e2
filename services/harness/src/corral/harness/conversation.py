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
blocks) is left out rather than failing the turn, so one bad event never wedges a session. The
blocks come from ``corral.harness.messageblocks``, the answers to tool uses (and how a result is
truncated or cleared) from ``corral.harness.toolanswers``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from corral.contracts.rpc import LoggedEvent
from corral.harness.jsonsize import Sized, block_chars, list_chars, messages_chars, sized
from corral.harness.messageblocks import ChatMessage, agent_blocks, joined, merge, tool_use_block, user_blocks
from corral.harness.requestbody import Messages, encode, with_field
from corral.harness.toolanswers import Answers, weight

COMPACTED: Final = "agent.thread_context_compacted"


def summary_text(summary: str, through: str) -> str:
    return (
        "This session's earlier conversation was summarised to fit the model's context window (the session "
        f"log keeps it whole, up to event {through}). Summary:\n\n{summary}"
    )


@dataclass(frozen=True)
class Counted:
    """The model's exact count of a request for this conversation: ``tokens`` for ``chars``
    characters of JSON, by ``model``'s tokenizer."""

    model: str
    chars: int
    tokens: int


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
    costs the same however long the log is. ``chars()`` is the length of ``messages()``'s JSON, kept
    as blocks are placed (``corral.harness.jsonsize``), so sizing a request costs the same however
    long the conversation is. Each placed message's JSON is kept too (encoded again only when the
    message changes), and ``messages()`` hands it over with the messages (``requestbody.Messages``),
    so a request's body is joined rather than encoded again. ``state()``/``restore()`` carry the
    builder in a snapshot (JSON-ready; the kept JSON is not in it: a restored builder encodes its
    messages once, at its first ``messages()``); ``state_json()`` is ``state()``'s JSON, joined from
    the kept JSON.

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
        self._sizes: list[Sized] = []
        """For each placed message, its JSON's size (``jsonsize``); ``_placed_chars`` adds them up."""
        self._placed_chars = 0
        self._json: list[str] = []
        """For each placed message, its JSON as a request body carries it (``requestbody.encode``);
        the messages in ``_stale`` changed since (or were never encoded) and are encoded again when
        ``messages()`` is next asked for, so a step encodes only what it changed."""
        self._stale: set[int] = set()
        self._held_back: list[ChatMessage] = []
        self._unplaced: list[str] = []
        self._answers = Answers(max_result_chars)
        self._open_request: str | None = None
        self._slots: dict[str, list[tuple[int, int]]] = {}
        """Where each placed ``tool_result`` block sits: (message index, block index), by tool use id."""
        self._summary: tuple[str, str] | None = None
        """The newest summary and the event it covers the log through."""
        self._before: str | None = None
        """The id of the event folded before the one being folded."""
        self._last_id: str | None = None
        self.counted: Counted | None = None
        """The newest exact count of a request for this conversation (kept in memory only, not in
        ``state()``: the compactor counts again when it is missing)."""

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
            block = tool_use_block(event)
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

    def messages(self) -> Messages:
        """The conversation so far, with what is still held back placed at the end, each message with
        its JSON (``requestbody.Messages``). The placed messages alternate roles already, so only their
        first and last can merge (with the summary and with what is held back): the ones between are
        taken as they are, with the JSON kept for them, in one slice."""
        placed = self._placed
        self._encode_changed()
        if len(placed) <= 2:
            whole = joined([*self._head(), *placed, *self._tail()])
            return Messages(whole, [self._encoded(message) for message in whole])
        left = joined([*self._head(), placed[0]])
        right = joined([placed[-1], *self._tail()])
        parts = [
            *(self._encoded(message) for message in left),
            *self._json[1:-1],
            *(self._encoded(message) for message in right),
        ]
        return Messages([*left, *placed[1:-1], *right], parts)

    def _encode_changed(self) -> None:
        for index in self._stale:
            self._json[index] = encode(self._placed[index])
        self._stale.clear()

    def _encoded(self, message: ChatMessage) -> str:
        """``message``'s JSON: the one kept when it is the first or last placed message as it is."""
        if self._placed and message is self._placed[0]:
            return self._json[0]
        if self._placed and message is self._placed[-1]:
            return self._json[-1]
        return encode(message)

    def chars(self) -> int:
        """``len(json.dumps(self.messages()))``, without encoding the conversation again."""
        head = [sized(m["role"], m["content"]) for m in self._head()]
        tail = [sized(m["role"], m["content"]) for m in self._tail()]
        return messages_chars(head, self._sizes, self._placed_chars, tail)

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
            message, size = self._placed[index], self._sizes[index]
            kept += list_chars(size.blocks, size.blocks_chars)
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
        size = sized(message["role"], message["content"])
        if self._placed and self._placed[-1]["role"] == message["role"]:
            last = self._placed[-1]
            at = (len(self._placed) - 1, len(last["content"]))
            last["content"].extend(message["content"])
            self._resize(at[0], self._sizes[-1].plus(size))
            self._stale.add(at[0])
        else:
            at = (len(self._placed), 0)
            self._placed.append({"role": message["role"], "content": list(message["content"])})
            self._origins.append(self._before)
            self._sizes.append(size)
            self._placed_chars += size.chars
            self._json.append("")
            self._stale.add(at[0])
        return at

    def _resize(self, index: int, size: Sized) -> None:
        self._placed_chars += size.chars - self._sizes[index].chars
        self._sizes[index] = size

    def _refill(self, touched: str | None) -> None:
        if touched is not None:
            for mi, bi in self._slots.get(touched, ()):
                content = self._placed[mi]["content"]
                old, content[bi] = content[bi], self._answers.block(touched)
                size = self._sizes[mi]
                changed = size.blocks_chars - block_chars(old) + block_chars(content[bi])
                self._resize(mi, Sized(size.role, size.blocks, changed))
                self._stale.add(mi)

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
        self._sizes = self._sizes[index:]
        self._placed_chars = sum(size.chars for size in self._sizes)
        self._json = self._json[index:]
        self._stale = {i - index for i in self._stale if i >= index}
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
        return {**self._state_but_placed(), "placed": self._placed}

    def state_json(self) -> str:
        """``requestbody.encode(self.state())``, its placed messages joined from the JSON kept for
        them: a snapshot of a long conversation copies its JSON instead of encoding it again."""
        self._encode_changed()
        return with_field(encode(self._state_but_placed()), "placed", "[" + ",".join(self._json) + "]")

    def _state_but_placed(self) -> dict[str, Any]:
        return {
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
        roles = [message["role"] for message in builder._placed]
        if any(a == b for a, b in itertools.pairwise(roles)):
            raise ValueError("a conversation state whose placed messages do not alternate roles")
        builder._sizes = [sized(message["role"], message["content"]) for message in builder._placed]
        builder._placed_chars = sum(size.chars for size in builder._sizes)
        builder._json = [""] * len(builder._placed)
        builder._stale = set(range(len(builder._placed)))
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
