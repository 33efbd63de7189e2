"""Bounds on what the manager reads from one sandbox (``ChannelLimits``) and the manager-wide cap on
replies in parts being put together at once (``ReplyAssemblies``); ``corral.sandbox_manager.channel``
says what they bound and why."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Final

#: A reply line is at most this many times the text it carries (a control character is 1 byte of
#: output and 6 of JSON: ``\u0001``) ...
FRAME_FACTOR: Final = 6
#: ... plus this much (the id, the part fields, the envelope).
FRAME_SLACK: Final = 65536
#: Bytes a reply's text may exceed the output limit by (the agent's truncation notes, a sandbox notice).
REPLY_SLACK: Final = 65536


class ReplyAssemblies:
    """The manager-wide cap on replies in parts being put together at once (each holds up to the
    output limit): a sandbox whose reply finds none free is not read from until one is."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._free = asyncio.Semaphore(most)
        #: Places held, and sandboxes waiting for one.
        self.taken = 0
        self.waiting = 0

    async def take(self) -> None:
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.taken += 1

    def give_back(self) -> None:
        self.taken -= 1
        self._free.release()


@dataclass(frozen=True)
class ChannelLimits:
    """Bounds on what the manager reads from one sandbox (see the module docstring)."""

    #: Longest reply line accepted: a part of a reply fits (``part_bytes``).
    max_frame_bytes: int = 1 << 20
    #: Bytes of the sandbox's stderr logged per ``EXCERPT_WINDOW_S`` (0: none, only counted).
    stderr_log_bytes: int = 2048
    #: Longest reply text put together from parts (the output limit plus ``REPLY_SLACK``).
    max_reply_bytes: int = 8 * 2**20 + REPLY_SLACK
    #: Shared by every channel of a manager (``Launcher`` holds one ``ChannelLimits``).
    assemblies: ReplyAssemblies = field(default_factory=lambda: ReplyAssemblies(4), compare=False)

    @property
    def part_bytes(self) -> int:
        """Largest piece of text one line of a reply in parts carries (its line fits ``max_frame_bytes``)."""
        return (self.max_frame_bytes - FRAME_SLACK) // FRAME_FACTOR

    @property
    def max_parts(self) -> int:
        """Most parts a reply may be sent in (every piece but the last holds ``part_bytes - 3`` or more)."""
        return -(-self.max_reply_bytes // (self.part_bytes - 3))
