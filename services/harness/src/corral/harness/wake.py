"""The wake-up loop: fetch from the shared work queue, run each session in its own task.

All harness workers share the durable pull consumer ``subjects.WAKE_CONSUMER`` on the
``CORRAL_WAKE`` work-queue stream; each message is an ``rpc.Wake``. A worker runs at most
``concurrency`` sessions at once and fetches only when it has a free slot, so it never sits on a
wake-up it cannot start. Every message ends in exactly one of:

    ack              the session has nothing left to do
    nak(1 s)         another worker held the lease for all of ``lease_wait_s`` (a wake-up that finds the
                     session leased first waits for the holder to let it go, watching the lease key,
                     and takes it then; the holder itself looks at the log's end before it lets go, so
                     input logged while it held the lease is normally handled by it)
    nak(backoff)     the lease was lost, the store was unavailable, or something unexpected failed
    nak()            shutdown came before the session finished (another worker takes it now)
    term             the message is unreadable, or the store refuses the session's events

While a session runs, the message's ack deadline is pushed back with ``in_progress()`` every
``ack_wait/3``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from typing import Protocol

from opentelemetry import trace
from pydantic import ValidationError

from corral import telemetry
from corral.contracts import rpc, subjects
from corral.harness import metrics
from corral.harness.lease import HeldLease, LeaseBusy, Leases, Sleep
from corral.harness.turn import Outcome

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)


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


def redelivery_delay(num_delivered: int) -> float:
    """Backoff for a wake-up handed back after a failure: 0.5 s doubling to 30 s."""
    return float(min(0.5 * 2 ** max(num_delivered - 1, 0), 30.0))


class WakeLoop:
    def __init__(
        self,
        source: WakeSource,
        *,
        leases: Leases,
        runner: SessionRunner,
        concurrency: int,
        ack_wait_s: float,
        shutdown_grace_s: float,
        fetch_timeout_s: float = 1.0,
        busy_delay_s: float = 1.0,
        lease_wait_s: float = 15.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._source = source
        self._leases = leases
        self._runner = runner
        self._concurrency = concurrency
        self._ack_wait_s = ack_wait_s
        self._grace_s = shutdown_grace_s
        self._fetch_timeout_s = fetch_timeout_s
        self._busy_delay_s = busy_delay_s
        self._lease_wait_s = lease_wait_s
        self.lease_waits = 0
        """Wake-ups that found their session leased and waited for it."""
        self.lease_handoffs = 0
        """Wake-ups that got the lease after waiting for it (the holder let it go with work left)."""
        self.lease_handbacks = 0
        """Wake-ups handed back because the lease stayed held for all of ``lease_wait_s``."""
        self._sleep = sleep
        self.active: set[str] = set()
        """Sessions this worker is running right now."""
        self._holding: dict[str, int] = {}
        """Sessions whose lease this worker holds → the newest log position a wake-up joined it with
        (0: none since the run began)."""
        self._run_spans: dict[str, trace.SpanContext] = {}
        """The span of each run this worker has going (a wake-up that joins the run links to it)."""
        self.joined = 0
        """Wake-ups handed to this worker's own run of their session (it runs again before letting go)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and run wake-ups until ``stop`` is set, then drain (see ``shutdown_grace_s``)."""
        slots = asyncio.Semaphore(self._concurrency)
        inflight: set[asyncio.Task[None]] = set()
        async with asyncio.TaskGroup() as tg:
            stopping = tg.create_task(stop.wait())
            try:
                while await self._take_slot(slots, stopping):
                    deliveries = await self._fetch(stop)
                    if not deliveries:
                        slots.release()
                        continue
                    for delivery in deliveries:
                        task = tg.create_task(self._run_one(delivery, slots))
                        inflight.add(task)
                        task.add_done_callback(inflight.discard)
            finally:
                stopping.cancel()
            await self._drain(inflight)

    async def _take_slot(self, slots: asyncio.Semaphore, stopping: asyncio.Task[bool]) -> bool:
        if stopping.done():
            return False
        acquiring = asyncio.ensure_future(slots.acquire())
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not acquiring.done():
            acquiring.cancel()
            await asyncio.wait({acquiring})
        if acquiring.cancelled():
            return False
        if stopping.done():
            slots.release()
            return False
        return True

    async def _fetch(self, stop: asyncio.Event) -> Sequence[WakeDelivery]:
        try:
            return await self._source.fetch(1, timeout=self._fetch_timeout_s)
        except Exception:
            logger.warning("fetching wake-ups failed; trying again shortly", exc_info=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()
            return []

    async def _drain(self, inflight: set[asyncio.Task[None]]) -> None:
        if not inflight:
            return
        logger.info(
            "stopping: letting running sessions finish",
            extra={"fields": {"sessions": sorted(self.active), "grace_s": self._grace_s}},
        )
        _done, unfinished = await asyncio.wait(set(inflight), timeout=self._grace_s)
        for task in unfinished:
            task.cancel()

    async def _run_one(self, delivery: WakeDelivery, slots: asyncio.Semaphore) -> None:
        try:
            await self._handle(delivery)
        finally:
            slots.release()

    async def _handle(self, delivery: WakeDelivery) -> None:
        try:
            wake = rpc.Wake.model_validate_json(delivery.data)
        except ValidationError:
            logger.warning("terminating an unreadable wake-up", extra={"fields": {"stream_seq": delivery.seq}})
            await self._settle(delivery.term(), wake=None)
            return
        fields = {"session_id": wake.session_id, "reason": wake.reason, "num_delivered": delivery.num_delivered}
        if wake.session_id in self._holding:
            # This worker is running the session: its run looks at the log again before it lets go.
            self._holding[wake.session_id] = max(self._holding[wake.session_id], wake.seq, 1)
            self.joined += 1
            self._trace_join(wake, delivery)
            logger.info("wake-up joined the session's running run", extra={"fields": fields})
            await self._settle(delivery.ack(), wake=wake)
            return
        self.active.add(wake.session_id)
        span = _tracer.start_as_current_span(
            "process corral.wake.{session_id}",
            context=telemetry.extract(delivery.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": subjects.wake(wake.session_id),
                "messaging.destination.template": subjects.wake("{session_id}"),
                "corral.session_id": wake.session_id,
            },
        )
        try:
            with span as current:
                self._run_spans[wake.session_id] = current.get_span_context()
                outcome = await self._work(wake, delivery)
        except LeaseBusy:
            self.lease_handbacks += 1
            logger.info("lease held elsewhere all along; handing the wake-up back", extra={"fields": fields})
            await self._settle(delivery.nak(delay=self._busy_delay_s), wake=wake)
            return
        except asyncio.CancelledError:
            logger.info("shutdown before the session finished; handing it back", extra={"fields": fields})
            await self._settle(delivery.nak(), wake=wake)
            raise
        except Exception:
            logger.exception("session run failed", extra={"fields": fields})
            await self._settle(delivery.nak(delay=redelivery_delay(delivery.num_delivered)), wake=wake)
            return
        finally:
            self.active.discard(wake.session_id)
            self._run_spans.pop(wake.session_id, None)
        logger.info("session run ended", extra={"fields": {**fields, "outcome": outcome.value}})
        if outcome is Outcome.DONE:
            await self._settle(delivery.ack(), wake=wake)
        elif outcome is Outcome.REJECTED:
            await self._settle(delivery.term(), wake=wake)
        else:
            await self._settle(delivery.nak(delay=redelivery_delay(delivery.num_delivered)), wake=wake)

    def _trace_join(self, wake: rpc.Wake, delivery: WakeDelivery) -> None:
        """A wake-up taken up by the run already going: its trace gets a span linked to that run's
        (whose parent is the wake-up that started it), so it shows which work took its input."""
        running = self._run_spans.get(wake.session_id)
        with _tracer.start_as_current_span(
            "process corral.wake.{session_id}",
            context=telemetry.extract(delivery.headers),
            kind=trace.SpanKind.CONSUMER,
            links=telemetry.link_to(running, **{"corral.link": "joined_run"}),
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": subjects.wake(wake.session_id),
                "messaging.destination.template": subjects.wake("{session_id}"),
                "corral.session_id": wake.session_id,
                "corral.joined_run": True,
            },
        ):
            pass

    async def _work(self, wake: rpc.Wake, delivery: WakeDelivery) -> Outcome:
        waited = False
        deadline = asyncio.get_running_loop().time() + self._lease_wait_s
        while True:
            try:
                async with self._leases.hold(wake.session_id) as lease, asyncio.TaskGroup() as tg:
                    if waited:
                        lease.handed_off = True
                        self.lease_handoffs += 1
                        metrics.LEASE_TAKEOVERS.inc()
                        logger.info(
                            "took the lease after waiting for its holder",
                            extra={"fields": {"session_id": wake.session_id}},
                        )
                    heartbeat = tg.create_task(self._heartbeat(delivery))
                    self._holding[wake.session_id] = 0
                    try:
                        min_seq = wake.seq
                        while True:
                            outcome = await self._runner.run(wake.session_id, lease, min_seq=min_seq)
                            joined = self._holding[wake.session_id]
                            if outcome is not Outcome.DONE or not joined:
                                return outcome
                            self._holding[wake.session_id] = 0
                            min_seq = joined
                    finally:
                        # Synchronously, before the lease is released: a wake-up from now on waits for it.
                        del self._holding[wake.session_id]
                        heartbeat.cancel()
            except LeaseBusy:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise
                if not waited:
                    self.lease_waits += 1
                    waited = True
                # Keep the wake-up ours meanwhile: the wait may be longer than the ack wait's third.
                with contextlib.suppress(Exception):
                    await delivery.in_progress()
                await self._leases.wait_released(wake.session_id, timeout_s=min(left, self._ack_wait_s / 3))

    async def _heartbeat(self, delivery: WakeDelivery) -> None:
        while True:
            await self._sleep(self._ack_wait_s / 3)
            try:
                await delivery.in_progress()
            except Exception:
                logger.debug("in_progress failed", exc_info=True)

    async def _settle(self, step: Awaitable[None], *, wake: rpc.Wake | None) -> None:
        try:
            await step
        except Exception:
            session = wake.session_id if wake else None
            logger.warning(
                "could not settle a wake-up; it comes back after the ack wait",
                extra={"fields": {"session_id": session}},
                exc_info=True,
            )
