"""Releasing a session's sandbox when the session log says the session ended (archived or deleted).

The boundary is the log itself: the session-store appends the archive mark or the tombstone and
answers; this manager reads the log's record headers through its own durable consumer
(``subjects.SANDBOX_RELEASES_SPEC``: headers only) and releases on its own. Nothing else is written,
so nothing can be lost between two writes: a record in the log is a release owed.

Records are handled in log order, each acknowledged once handled; an archive or delete mark only
once its release is done, so a manager that dies (or freezes) before that gets the record again,
``ack_wait`` after it was handed out, and releases again (a release of a sandbox that is already gone
is a no-op). Acknowledgements are one by one, not acknowledge-all: a restarted manager's first
acknowledgement would otherwise also acknowledge the marks its dead predecessor had been handed but
never released. A release that fails (the engine is unreachable) is retried in place, keeping the
record's acknowledgement deadline alive, for ``RETRY_FOR_S``; then it is given up with an error log
and the idle sweep removes the sandbox later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from corral.contracts import headers as h
from corral.contracts import subjects
from corral.contracts.log import SANDBOX_ENDING_TYPES

logger = logging.getLogger(__name__)

BATCH = 256
"""Record headers fetched at once (a few hundred bytes each)."""

FETCH_WAIT_S = 5.0
RETRY_FOR_S = 300.0
"""How long a failing release is retried before it is left to the idle sweep."""

_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
"""Waits between attempts, each below the consumer's ``ack_wait`` (the deadline is renewed per attempt)."""


class Record(Protocol):
    """One record's headers from the consumer (``corral.bus.Delivery``)."""

    @property
    def subject(self) -> str: ...

    @property
    def headers(self) -> dict[str, str]: ...

    async def ack(self) -> None: ...

    async def in_progress(self) -> None: ...


class Feed(Protocol):
    async def fetch(self, batch: int = 1, *, timeout: float = 5.0) -> Sequence[Record]: ...

    async def close(self) -> None: ...


Release = Callable[[str, str], Awaitable[object]]
"""Release the session's sandbox (session id, reason); a no-op for a session without one."""


def ending(record: Record) -> str | None:
    """The reason a record ends its session's sandbox (``archived``/``deleted``), or ``None``."""
    kind = record.headers.get(h.RECORD_TYPE)
    if kind not in SANDBOX_ENDING_TYPES:
        return None
    return kind.removeprefix("corral.session_")


async def handle(records: Sequence[Record], release: Release, *, retry_for_s: float = RETRY_FOR_S) -> int:
    """Release what ``records`` (in log order) ask for, acknowledging as it goes; how many released."""
    released = 0
    for record in records:
        reason = ending(record)
        if reason is not None:
            await _release(record, subjects.session_id_of(record.subject), reason, release, retry_for_s)
            released += 1
        await record.ack()
    return released


async def _release(record: Record, session_id: str, reason: str, release: Release, retry_for_s: float) -> None:
    deadline = time.monotonic() + retry_for_s
    attempt = 0
    while True:
        await record.in_progress()
        try:
            await release(session_id, reason)
        except Exception as exc:
            if time.monotonic() >= deadline:
                logger.error(
                    "could not release the ended session's sandbox; giving up, the idle sweep will remove it",
                    extra={"fields": {"session_id": session_id, "reason": reason, "error": repr(exc)}},
                )
                return
            delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
            attempt += 1
            logger.warning(
                "could not release the ended session's sandbox; retrying",
                extra={"fields": {"session_id": session_id, "reason": reason, "error": repr(exc), "retry_s": delay}},
            )
            await asyncio.sleep(delay)
            continue
        logger.info("session released", extra={"fields": {"session_id": session_id, "reason": reason}})
        return


async def follow(
    bind: Callable[[], Awaitable[Feed | None]],
    release: Release,
    *,
    wait_s: float = 5.0,
    linger_s: float = subjects.ENDINGS_LINGER_S,
) -> None:
    """Bind to the consumer (waiting while the session-store has not created it) and handle its
    records until cancelled, pausing ``linger_s`` after a fetch that was not full (see
    ``subjects.ENDINGS_LINGER_S``), then close it. A failing fetch is logged and tried again after
    ``wait_s``."""
    feed: Feed | None = None
    told = False
    while feed is None:
        try:
            feed = await bind()
        except Exception as exc:
            logger.warning("cannot bind to the release consumer; retrying", extra={"fields": {"error": repr(exc)}})
        if feed is None:
            if not told:  # once: a manager run without a session-store (tests, a manager-only host) waits quietly
                logger.info(
                    "waiting for the session-store to create the release consumer",
                    extra={"fields": {"consumer": subjects.SANDBOX_RELEASES_SPEC.name}},
                )
                told = True
            await asyncio.sleep(wait_s)
    try:
        await _handle_all(feed, release, wait_s, linger_s)
    finally:  # unsubscribed before the connection drains (see ``corral.bus.Bus``)
        await feed.close()


async def _handle_all(feed: Feed, release: Release, wait_s: float, linger_s: float) -> None:
    while True:
        try:
            records = await feed.fetch(BATCH, timeout=FETCH_WAIT_S)
        except Exception as exc:
            logger.warning("fetching release records failed; retrying", extra={"fields": {"error": repr(exc)}})
            await asyncio.sleep(wait_s)
            continue
        try:
            await handle(records, release)
        except Exception as exc:  # an acknowledgement not sent: the records come back after ack_wait
            logger.warning("handling release records failed; retrying", extra={"fields": {"error": repr(exc)}})
            await asyncio.sleep(wait_s)
            continue
        if 0 < len(records) < BATCH:
            await asyncio.sleep(linger_s)
