"""A streamed Messages request's body, encoded from the JSON the conversation keeps (pure).

Encoding a request's whole body from its objects, on every request, costs more than everything
else the harness does per step once a session holds thousands of blocks. The conversation
(``corral.harness.conversation``) keeps each placed message's JSON, encoded once as it is placed
(again only when it changes), so a request's body (a turn's streamed request, or a ``count_tokens``)
is those pieces joined, plus the few fields around them, sent as ready bytes.

The encoding is the ``anthropic`` SDK's (``json.dumps`` with ``ensure_ascii=False``, compact
separators, no NaN, the fields in its order), so the bytes sent are the bytes the SDK would send for
the same request (the unit tests compare them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from corral.harness.messageblocks import ChatMessage

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode(value: Any) -> str:
    """``value``'s JSON as the ``anthropic`` SDK encodes a request body."""
    return _ENCODER.encode(value)


def with_field(encoded: str, key: str, value_json: str) -> str:
    """``encode({**obj, key: value})`` given ``encoded == encode(obj)`` and ``value_json ==
    encode(value)`` (``key`` not in ``obj``): a field whose JSON is at hand is added as it is."""
    separator = "," if encoded != "{}" else ""
    return f"{encoded[:-1]}{separator}{encode(key)}:{value_json}}}"


class Messages(list[ChatMessage]):
    """A conversation's messages together with each one's JSON (``encode``), taken when the list was.

    A snapshot: changing the list (or a message in it) afterwards does not change ``parts``; the
    harness never does, it builds each request's list anew."""

    def __init__(self, messages: Iterable[ChatMessage], parts: Sequence[str]) -> None:
        super().__init__(messages)
        if len(parts) != len(self):
            raise ValueError(f"{len(parts)} encoded messages for {len(self)} messages")
        self.parts = parts


def messages_json(messages: Sequence[ChatMessage]) -> str:
    """The JSON of ``messages``: joined from the pieces a ``Messages`` keeps, encoded otherwise."""
    return "[" + ",".join(_parts(messages)) + "]"


def _parts(messages: Sequence[ChatMessage]) -> Sequence[str]:
    return messages.parts if isinstance(messages, Messages) else [encode(message) for message in messages]


def stream_body(
    *,
    model: str,
    messages: Sequence[ChatMessage],
    max_tokens: int,
    system: str | None = None,
    tools: Sequence[dict[str, Any]] = (),
) -> bytes:
    """The body of a streamed ``POST /v1/messages``, fields in the order the client writes them
    (``system`` and ``tools`` only when given)."""
    after = [f'"model":{encode(model)}', *_system_and_tools(system, tools), '"stream":true']
    return _body([f'"max_tokens":{encode(max_tokens)}'], messages, after)


def count_body(
    *, model: str, messages: Sequence[ChatMessage], system: str | None = None, tools: Sequence[dict[str, Any]] = ()
) -> bytes:
    """The body of a ``POST /v1/messages/count_tokens``, fields in the order the client writes them."""
    return _body([], messages, [f'"model":{encode(model)}', *_system_and_tools(system, tools)])


def _system_and_tools(system: str | None, tools: Sequence[dict[str, Any]]) -> list[str]:
    fields = [f'"system":{encode(system)}'] if system else []
    if tools:
        fields.append(f'"tools":{encode(list(tools))}')
    return fields


def _body(before: list[str], messages: Sequence[ChatMessage], after: list[str]) -> bytes:
    """The object of the fields ``before``, ``"messages"`` and ``after`` (each field's JSON), joined
    once and encoded once: the conversation is most of the body, and each copy of it costs at
    thousands of blocks (a copy of megabytes is mostly the page faults of fresh memory)."""
    head = "".join(["{", *(field + "," for field in before), '"messages":['])
    tail = "".join(["]", *("," + field for field in after), "}"])
    pieces = list(_parts(messages)) or [""]
    pieces[0] = head + pieces[0]
    pieces[-1] = pieces[-1] + tail
    return ",".join(pieces).encode()
