"""Wake-ups sent beside the replies: an append is answered once its events are in the log, and the
wake-up it causes is stored after, by one task, instead of the client waiting for a second stored
write.

The wake-up only hints that a session has input; the log holds the input. So a wake-up is kept
until it is stored, asked again while the bus does not answer, and a newer one for the same session
replaces one still waiting (the harness reads the log to its end either way). At shutdown, once no
operation is served any more, what is waiting is sent for up to ``drain_s``; what is left then (the
bus away) is sent by the sweep at the next start-up of a session-store, as after a crash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from opentelemetry import context as otel_context

from corral.bus import UNANSWERED, Bus
from corral.contracts import subjects
from corral.contracts.rpc import Wake

logger = logging.getLogger(__name__)

RETRY_S = (0.05, 2.0)
"""The pause after a round of wake-ups the bus did not store: the first, and the most (doubling)."""


@dataclass(frozen=True)
class _Waiting:
    wake: Wake
    trace: otel_context.Context
    """The context of the append that caused it: the wake-up's span stays in the client's trace."""


async def publish_wake(bus: Bus, wake: Wake) -> None:
    """Store one wake-up (its message id makes a repeat of the same one a duplicate)."""
    await bus.publish(
        subjects.wake(wake.session_id), wake.model_dump_json().encode(), msg_id=f"wake:{wake.session_id}:{wake.seq}"
    )


class WakeSender:
    def __init__(self, bus: Bus, *, drain_s: float = 5.0) -> None:
        self._bus = bus
        self._drain_s = drain_s
        self._waiting: dict[str, _Waiting] = {}
        self._more = asyncio.Event()
        self._closed_at: float | None = None

    @property
    def waiting(self) -> int:
        """Wake-ups not stored yet."""
        return len(self._waiting)

    def send(self, session_id: str, seq: int, reason: str) -> None:
        """Store a wake-up for ``session_id``'s log up to ``seq`` as soon as the bus takes it."""
        current = self._waiting.get(session_id)
        if current is None or current.wake.seq < seq:
            wake = Wake(session_id=session_id, seq=seq, reason=reason)
            self._waiting[session_id] = _Waiting(wake, otel_context.get_current())
        self._more.set()

    def close(self) -> None:
        """No more wake-ups will be sent: ``run`` stores those waiting (for up to ``drain_s``) and ends."""
        if self._closed_at is None:
            self._closed_at = time.monotonic()
        self._more.set()

    async def run(self) -> None:
        """Store the wake-ups as they come, until ``close`` and the last of them."""
        pause = RETRY_S[0]
        while True:
            if not self._waiting:
                if self._closed_at is not None:
                    return
                self._more.clear()
                await self._more.wait()
                continue
            round_, self._waiting = self._waiting, {}
            async with asyncio.TaskGroup() as group:
                stored = [(waiting, group.create_task(self._store(waiting))) for waiting in round_.values()]
            failed = [(waiting, error) for waiting, task in stored if (error := task.result()) is not None]
            if not failed:
                pause = RETRY_S[0]
                continue
            for waiting, _ in failed:  # unless a newer one came meanwhile
                self._waiting.setdefault(waiting.wake.session_id, waiting)
            if self._closed_at is not None and time.monotonic() - self._closed_at > self._drain_s:
                logger.warning(
                    "wake-ups not stored at shutdown; a session-store's start-up sweep sends them",
                    extra={"fields": {"sessions": len(self._waiting)}},
                )
                return
            logger.warning(
                "storing wake-ups failed; retrying",
                extra={"fields": {"sessions": len(failed), "error": repr(failed[0][1]), "retry_s": pause}},
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_S[1])

    async def _store(self, waiting: _Waiting) -> Exception | None:
        """Store ``waiting``; what the bus said instead when it did not answer (any other error is a
        bug, and ends the service: its start-up sweep sends what was waiting)."""
        token = otel_context.attach(waiting.trace)
        try:
            await publish_wake(self._bus, waiting.wake)
        except UNANSWERED as exc:
            return exc
        finally:
            otel_context.detach(token)
        return None
