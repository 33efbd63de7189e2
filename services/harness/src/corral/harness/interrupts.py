"""Noticing a ``user.interrupt`` while a turn is under way.

Every input the session-store logs is followed by a wake-up on ``corral.wake.<session_id>``. The
work-queue consumer hands those to whichever worker fetches them (which then finds the lease
taken), so the lease holder also listens to the subject directly (a core subscription sees every
JetStream publish on it) and, on each wake-up, looks at the log for an interrupt.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Protocol

from pydantic import ValidationError

from corral.bus import Bus
from corral.contracts import rpc, subjects

logger = logging.getLogger(__name__)


class WakeFeed(Protocol):
    def watch(self, session_id: str) -> AsyncIterator[rpc.Wake]:
        """Wake-ups for ``session_id`` published from now on, until the caller stops iterating."""
        ...


class BusWakeFeed:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def watch(self, session_id: str) -> AsyncIterator[rpc.Wake]:
        async for data, _headers in self._bus.subscribe_core(subjects.wake(session_id)):
            try:
                yield rpc.Wake.model_validate_json(data)
            except ValidationError:
                logger.warning("ignored an unreadable wake-up", extra={"fields": {"session_id": session_id}})
