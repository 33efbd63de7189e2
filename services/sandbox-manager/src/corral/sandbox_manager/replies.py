"""The exec agent's replies as the manager reads them: one line, or one reply sent in parts and put
together within bounds (``PartsAssembler``; the rules are in ``corral.sandbox_manager.channel``).
Anything the agent never sends is a ``ProtocolViolation``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from corral.sandbox_manager.channel_limits import ChannelLimits


class ProtocolViolation(Exception):
    """The sandbox sent something the exec agent never sends; the message says what."""


@dataclass(frozen=True)
class AgentReply:
    text: str
    is_error: bool


def parse_reply(raw: dict[str, Any]) -> AgentReply:
    blocks = raw.get("content") or []
    text = "".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict))
    return AgentReply(text=text, is_error=bool(raw.get("is_error")))


@dataclass
class Assembly:
    """A reply arriving in parts: which call, what it declared, what came so far."""

    call_id: str
    parts: int
    total: int
    is_error: bool
    #: ``None``: nobody waits for this reply (its parts are checked and dropped).
    pieces: list[str] | None
    received: int = 0
    next_part: int = 0


class PartsAssembler:
    """Puts together the reply in parts a channel is reading, if any: at most one at a time, each
    holding one of the manager's ``ReplyAssemblies`` places while a caller waits for it. A finished
    reply resolves its call's future in ``pending`` (the channel's calls in flight)."""

    def __init__(self, limits: ChannelLimits, pending: dict[str, asyncio.Future[dict[str, Any]]]) -> None:
        self.limits = limits
        self._pending = pending
        self._assembly: Assembly | None = None
        self._holds_place = False

    @property
    def active(self) -> bool:
        """Whether a reply in parts is being read (every line until its last part must be a part of it)."""
        return self._assembly is not None

    async def begin(self, first: dict[str, Any]) -> None:
        """The first part of a reply in parts: check what it declares, then take it (see ``add``)."""
        parts, total, part = first.get("parts"), first.get("bytes"), first.get("part")
        limits = self.limits
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (parts, total, part)):
            raise ProtocolViolation("it sent a part of a reply without integer part, parts and bytes")
        assert isinstance(parts, int) and isinstance(total, int)
        if part != 0:
            raise ProtocolViolation(f"it sent part {part} of a reply before its part 0")
        if not 2 <= parts <= limits.max_parts or total > limits.max_reply_bytes:
            raise ProtocolViolation(
                f"it announced a reply of {total} bytes in {parts} parts (at most {limits.max_reply_bytes} bytes "
                f"in {limits.max_parts} parts)"
            )
        if not (parts - 1) * (limits.part_bytes - 3) <= total <= parts * limits.part_bytes:
            raise ProtocolViolation(f"it announced a reply of {total} bytes in {parts} parts of {limits.part_bytes}")
        call_id = str(first["id"])
        if call_id in self._pending:
            await limits.assemblies.take()  # nothing more is read from this sandbox until one is free
            self._holds_place = True
        waited = call_id in self._pending  # the caller may have given up meanwhile
        if not waited and self._holds_place:
            self._holds_place = False
            limits.assemblies.give_back()
        self._assembly = Assembly(call_id, parts, total, bool(first.get("is_error")), [] if waited else None)
        self._add(self._assembly, first)

    def add(self, reply: dict[str, Any]) -> None:
        """Take the next part of the reply being read (``active``)."""
        assert self._assembly is not None
        self._add(self._assembly, reply)

    def _add(self, assembly: Assembly, reply: dict[str, Any]) -> None:
        """Take the next part of ``assembly``: anything but exactly that part is a protocol violation."""
        if (
            str(reply["id"]) != assembly.call_id
            or reply.get("part") != assembly.next_part
            or reply.get("parts") != assembly.parts
            or reply.get("bytes") != assembly.total
        ):
            raise ProtocolViolation(
                f"it sent a line that is not part {assembly.next_part} of {assembly.parts} of the reply it was sending"
            )
        piece = parse_reply(reply).text
        size = len(piece.encode("utf-8"))
        last = assembly.next_part == assembly.parts - 1
        if size > self.limits.part_bytes or (not last and size < self.limits.part_bytes - 3):
            raise ProtocolViolation(
                f"it sent a part of {size} bytes (parts but the last carry {self.limits.part_bytes - 3} to "
                f"{self.limits.part_bytes})"
            )
        assembly.received += size
        assembly.next_part += 1
        if assembly.received > assembly.total or (last and assembly.received != assembly.total):
            raise ProtocolViolation(
                f"it sent {assembly.received} bytes in {assembly.next_part} parts of a reply announced as "
                f"{assembly.total} bytes in {assembly.parts} parts"
            )
        if assembly.pieces is not None:
            assembly.pieces.append(piece)
        if not last:
            return
        self._assembly = None
        self._give_back_place()
        future = self._pending.pop(assembly.call_id, None)
        if future is not None and not future.done() and assembly.pieces is not None:
            text = "".join(assembly.pieces)
            future.set_result(
                {"id": assembly.call_id, "content": [{"type": "text", "text": text}], "is_error": assembly.is_error}
            )

    def drop(self) -> None:
        """Forget the reply being read, if any (the stream ended), and give its place back."""
        self._assembly = None
        self._give_back_place()

    def _give_back_place(self) -> None:
        if self._holds_place:
            self._holds_place = False
            self.limits.assemblies.give_back()
