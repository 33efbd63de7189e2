"""Closing an ended session's MCP connections when the session log says it ended (archived or deleted).

The credential-proxy reads the log's record headers through its own durable consumer
(``subjects.MCP_SESSION_ENDINGS_SPEC``, created by the session-store: headers only, never a body)
and, for each archive mark or tombstone (``log.SANDBOX_ENDING_TYPES``), closes the session's MCP
connections, so an MCP server sees the connection end when the session does, not only once it has
been idle. Every record is acknowledged once handled; a close cannot fail (it only ends tasks), so
nothing is retried. A fetch that fails is logged and tried again after ``wait_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from corral.contracts import headers as h
from corral.contracts import subjects
from corral.contracts.log import SANDBOX_ENDING_TYPES

logger = logging.getLogger(__name__)

BATCH = 256
FETCH_WAIT_S = 5.0


class Record(Protocol):
    """One record's headers from the consumer (``corral.bus.Delivery``)."""

    @property
    def subject(self) -> str: ...

    @property
    def headers(self) -> dict[str, str]: ...

    async def ack(self) -> None: ...


class Feed(Protocol):
    async def fetch(self, batch: int = 1, *, timeout: float = 5.0) -> Sequence[Record]: ...

    async def close(self) -> None: ...


Close = Callable[[str], Awaitable[int]]
"""Close the session's MCP connections; how many there were."""


async def handle(records: Sequence[Record], close: Close) -> int:
    """Close the connections of the sessions ``records`` end, acknowledging each; how many closed."""
    closed = 0
    for record in records:
        kind = record.headers.get(h.RECORD_TYPE)
        if kind in SANDBOX_ENDING_TYPES:
            session_id = subjects.session_id_of(record.subject)
            count = await close(session_id)
            if count:
                logger.info(
                    "ended session's MCP connections closed",
                    extra={"fields": {"session_id": session_id, "reason": kind, "connections": count}},
                )
            closed += count
        await record.ack()
    return closed


async def follow(
    bind: Callable[[], Awaitable[Feed | None]],
    close: Close,
    *,
    wait_s: float = 5.0,
    linger_s: float = subjects.ENDINGS_LINGER_S,
) -> None:
    """Bind to the consumer (waiting while the session-store has not created it) and handle its
    records until cancelled, pausing ``linger_s`` after a fetch that was not full (see
    ``subjects.ENDINGS_LINGER_S``), then close it."""
    feed: Feed | None = None
    while feed is None:
        try:
            feed = await bind()
        except Exception as exc:
            logger.warning("cannot bind to the session endings consumer", extra={"fields": {"error": repr(exc)}})
        if feed is None:
            await asyncio.sleep(wait_s)
    try:
        while True:
            try:
                records = await feed.fetch(BATCH, timeout=FETCH_WAIT_S)
                await handle(records, close)
            except Exception as exc:  # what was not acknowledged comes back after ack_wait
                logger.warning("reading session endings failed; retrying", extra={"fields": {"error": repr(exc)}})
                await asyncio.sleep(wait_s)
                continue
            if 0 < len(records) < BATCH:
                await asyncio.sleep(linger_s)
    finally:  # unsubscribed before the connection drains (see ``corral.bus.Bus``)
        await feed.close()
