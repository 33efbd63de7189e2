"""What the wake-up loop works with: the work queue's messages and fetches, and the session runner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from corral.harness.lease import HeldLease
from corral.harness.turn import Outcome


class WakeDelivery(Protocol):
    @property
    def data(self) -> bytes: ...

    @property
    def seq(self) -> int: ...

    @property
    def num_delivered(self) -> int: ...

    @property
    def headers(self) -> dict[str, str]: ...

    async def ack(self) -> None: ...

    async def nak(self, delay: float | None = None) -> None: ...

    async def in_progress(self) -> None: ...

    async def term(self) -> None: ...


class WakeSource(Protocol):
    async def fetch(self, batch: int = 1, *, timeout: float = 5.0) -> Sequence[WakeDelivery]: ...


class SessionRunner(Protocol):
    async def run(self, session_id: str, lease: HeldLease, *, min_seq: int = 0) -> Outcome: ...

    async def logged_after(self, session_id: str, seq: int) -> bool:
        """Whether the session's log holds a record past stream sequence ``seq``."""
        ...
