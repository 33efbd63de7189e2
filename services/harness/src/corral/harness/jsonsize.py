"""The length of a Messages conversation's JSON, from the lengths of its blocks (pure).

A request's size is estimated from the characters of its JSON (``json.dumps`` with the default
separators), and a long session's conversation holds thousands of blocks: encoding all of them
again at every step would make each step cost more than the last. JSON is compositional, so the
conversation keeps each block's encoded length as it is placed and adds them up here instead:

    json.dumps([a, b])                        == "[" + json.dumps(a) + ", " + json.dumps(b) + "]"
    json.dumps({"role": r, "content": [...]}) == '{"role": "' + r + '", "content": [' + ... + "]}"

``messages_chars(...)`` is exactly ``len(json.dumps(messages))`` (the unit tests check it against
``json.dumps`` on random conversations).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_SEPARATOR = len(", ")
_BRACKETS = len("[]")


def block_chars(block: Any) -> int:
    """The length of one block's JSON."""
    return len(json.dumps(block))


def list_chars(items: int, items_chars: int) -> int:
    """The length of a JSON list of ``items`` items whose own JSON adds up to ``items_chars``."""
    return _BRACKETS + items_chars + _SEPARATOR * max(0, items - 1)


def _message_overhead(role: str) -> int:
    return len('{"role": "') + len(role) + len('", "content": ') + len("}")


@dataclass(frozen=True)
class Sized:
    """A message as its JSON length sees it: its role, how many blocks, their JSON's total length."""

    role: str
    blocks: int
    blocks_chars: int

    @property
    def chars(self) -> int:
        """The length of ``json.dumps({"role": role, "content": blocks})``."""
        return _message_overhead(self.role) + list_chars(self.blocks, self.blocks_chars)

    def plus(self, other: Sized) -> Sized:
        """The message ``other`` merged into this one (same role: content concatenated)."""
        return Sized(self.role, self.blocks + other.blocks, self.blocks_chars + other.blocks_chars)


def sized(role: str, content: Sequence[Any]) -> Sized:
    return Sized(role, len(content), sum(block_chars(block) for block in content))


def merged(messages: Iterable[Sized]) -> list[Sized]:
    """Consecutive messages of the same role merged, as the conversation merges them."""
    out: list[Sized] = []
    for message in messages:
        if out and out[-1].role == message.role:
            out[-1] = out[-1].plus(message)
        else:
            out.append(message)
    return out


def messages_chars(head: Sequence[Sized], middle: Sequence[Sized], middle_chars: int, tail: Sequence[Sized]) -> int:
    """``len(json.dumps(messages))`` for ``head + middle + tail`` with same-role neighbours merged,
    where ``middle`` alternates roles already and its messages' JSON adds up to ``middle_chars``: only
    its first and last messages can merge (with ``head`` and ``tail``), so this costs the same however
    long ``middle`` is."""
    if len(middle) <= 2:
        whole = merged([*head, *middle, *tail])
        return list_chars(len(whole), sum(m.chars for m in whole))
    left = merged([*head, middle[0]])
    right = merged([middle[-1], *tail])
    inner_chars = middle_chars - middle[0].chars - middle[-1].chars
    count = len(left) + len(middle) - 2 + len(right)
    return list_chars(count, sum(m.chars for m in left) + inner_chars + sum(m.chars for m in right))
