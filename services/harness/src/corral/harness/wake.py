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
import functools
import logging
from typing import Any

from opentelemetry import trace
from pydantic import ValidationError

from corral.contracts import rpc
from corral.harness import metrics, wakespans
from corral.harness.lease import HeldLease, LeaseBusy, Leases, LeaseUnavailable, Released, Sleep
from corral.harness.turn import Outcome
from corral.harness.wakecounts import WakeCounts
from corral.harness.wakeports import SessionRunner, WakeDelivery, WakeSource
from corral.harness.wakesettle import keep_alive, redelivery_delay, settle
from corral.harness.wakeslots import Runs, drain, fetch, take_slot

logger = logging.getLogger(__name__)


class WakeLoop(WakeCounts):
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
        super().__init__()
        self._sleep = sleep
        self.active: set[str] = set()
        """Sessions this worker is running right now."""
        self._holding: dict[str, int] = {}
        """Sessions whose lease this worker holds → the newest log position a wake-up joined it with
        (0: none since the run began)."""
        self._run_spans: dict[str, trace.SpanContext] = {}
        """The span of each run this worker has going (a wake-up that joins the run links to it)."""
        self._run_deliveries: dict[str, int] = {}
        """The stream sequence of the wake-up each run this worker has going settles when it ends."""
        self._waiters: dict[str, asyncio.Future[int | None]] = {}
        """Sessions a wake-up here waits for the lease of → told by the expiry watch when it expires."""
        self._expired: dict[str, int | None] = {}
        """Sessions whose lease expired while every slot was busy → the revision to take it over from
        (the latest seen), each taken over once a slot frees."""
        self._told: dict[str, int | None] = {}
        """Sessions this worker had going when the watch told their lease expired → its revision:
        looked at again when the work ends (``_done_with``), which may not have taken the lease."""
        self._runs: Runs | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and run wake-ups until ``stop`` is set, then drain (see ``shutdown_grace_s``)."""
        async with asyncio.TaskGroup() as tg:
            runs = self._runs = Runs(tg, asyncio.Semaphore(self._concurrency))
            stopping = tg.create_task(stop.wait())
            watching = tg.create_task(self._take_over_expired(runs), name="lease-expiries")
            try:
                while await take_slot(runs.slots, stopping):
                    deliveries = await fetch(self._source, stop, timeout_s=self._fetch_timeout_s)
                    if not deliveries:
                        runs.slots.release()
                        continue
                    for delivery in deliveries:
                        runs.start(self._handle(delivery))
            finally:
                stopping.cancel()
                watching.cancel()
                runs.cancel_queued()
            await drain(runs.inflight, grace_s=self._grace_s, active=self.active)

    async def _take_over_expired(self, runs: Runs) -> None:
        """Take over each session whose lease expires (its holder died mid-run) without waiting for its
        wake-up: every worker tries, one gets the lease; the wake-up, when it comes back, joins the run
        or finds the session served. The expiry is told once and the wake-up may never come back (acked
        by a run it joined), so with every slot busy the takeover waits for one, and a session this
        worker has going is looked at when that work ends (``_done_with``). The watch is opened again
        when it breaks (backoff 0.2 s doubling to 5 s)."""
        backoff = 0.2
        while True:
            try:
                async for expired in self._leases.expiries():
                    backoff = 0.2
                    session_id = expired.session_id
                    if session_id in self._holding or session_id in self.active:
                        self._told[session_id] = expired.revision  # for when this worker's work on it ends
                    if session_id in self._holding:
                        continue
                    if session_id in self.active:  # a wake-up here waits (or is about to) for it: its turn
                        waiter = self._waiters.setdefault(session_id, asyncio.get_running_loop().create_future())
                        if not waiter.done():
                            waiter.set_result(expired.revision)
                        continue
                    if runs.slots.locked():
                        self._queue_takeover(runs, session_id, expired.revision)
                        continue
                    await runs.slots.acquire()  # free: taken at once
                    runs.start(self._take_over(session_id, expired.revision), name=f"takeover-{session_id}")
            except Exception:
                logger.warning("the lease expiry watch failed; opening it again", exc_info=True)
            await self._sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _take_over_queued(self, session_id: str) -> None:
        """Take over ``session_id`` (queued: ``_queue_takeover``) now that a slot is free, unless this worker
        has it going by then (a worker that took it meanwhile makes the takeover find the lease busy)."""
        revision = self._expired.pop(session_id, None)
        if session_id in self._holding or session_id in self.active:
            return
        await self._take_over(session_id, revision)

    async def _take_over(self, session_id: str, revision: int | None) -> None:
        """Take the expired lease and run the session. A write of the lease the bucket does not answer,
        and a run that ends ``retry_later`` (the store unavailable, or behind), are tried again (0.5 s
        doubling to 30 s) until the run ends otherwise or the lease is found held: the session's wake-up
        may have been acked by the run it joined, and the expiry is told once, so no one else would."""
        fields = {"session_id": session_id, "reason": "lease_expired"}
        self.active.add(session_id)  # ``revision``: seen expiring by this worker's watch; none: the server's mark
        logger.info("taking over a session whose lease expired", extra={"fields": {**fields, "revision": revision}})
        attempts = 0
        try:
            while True:
                try:
                    outcome = await self._hold_and_run(session_id, 0, None, waited=False, over=revision)
                    if outcome is not Outcome.RETRY_LATER:
                        break
                    attempts, revision = attempts + 1, None  # the run let the lease go: take it as anyone would
                    logger.warning(
                        "taken-over session to be run again later", extra={"fields": {**fields, "attempts": attempts}}
                    )
                    await self._sleep(redelivery_delay(attempts))
                except LeaseUnavailable as exc:
                    attempts += 1
                    logger.warning(
                        "could not take an expired lease; trying again",
                        extra={"fields": {**fields, "attempts": attempts, "error": repr(exc.__cause__)}},
                    )
                    await self._sleep(redelivery_delay(attempts))
        except LeaseBusy:  # another worker took it over
            return
        except Exception:  # its wake-up comes back after the ack wait
            logger.exception("taking over a session failed", extra={"fields": fields})
            return
        finally:
            self._done_with(session_id)
        self.takeovers += 1
        metrics.LEASE_TAKEOVERS.inc()
        logger.info("took over a session whose lease expired", extra={"fields": {**fields, "outcome": outcome.value}})

    def _queue_takeover(self, runs: Runs, session_id: str, revision: int | None) -> None:
        """Take the session over once a slot frees (queued once, from the latest revision told)."""
        if session_id not in self._expired:
            runs.queue(functools.partial(self._take_over_queued, session_id), name=f"expired-{session_id}")
        self._expired[session_id] = revision

    def _done_with(self, session_id: str) -> None:
        """This worker's work on the session ends: an expiry told meanwhile and left to it, which no lease
        taken here since answered, is acted on now (in the F20 partition every harness had the session
        going, each work ended without the lease, and the session stayed running with no holder)."""
        self.active.discard(session_id)
        if session_id in self._told and session_id not in self.active and session_id not in self._holding:
            revision = self._told.pop(session_id)
            if self._runs is not None:
                self._queue_takeover(self._runs, session_id, revision)

    async def _handle(self, delivery: WakeDelivery) -> None:
        try:
            wake = rpc.Wake.model_validate_json(delivery.data)
        except ValidationError:
            logger.warning("terminating an unreadable wake-up", extra={"fields": {"stream_seq": delivery.seq}})
            await settle(delivery.term(), wake=None)
            return
        fields = {"session_id": wake.session_id, "reason": wake.reason, "num_delivered": delivery.num_delivered}
        if wake.session_id in self._holding:
            # This worker is running the session: its run looks at the log again before it lets go.
            self._holding[wake.session_id] = max(self._holding[wake.session_id], wake.seq, 1)
            self.joined += 1
            wakespans.joining(wake, delivery, self._run_spans.get(wake.session_id))
            logger.info("wake-up joined the session's running run", extra={"fields": fields})
            if self._run_deliveries.get(wake.session_id) == delivery.seq:
                # A redelivery of the very wake-up the run holds (its ack wait ran out): acking it would
                # settle the message, and the run's own nak (retry later) would then be ignored.
                await settle(delivery.in_progress(), wake=wake)
            else:
                await settle(delivery.ack(), wake=wake)
            return
        self.active.add(wake.session_id)
        self._run_deliveries[wake.session_id] = delivery.seq
        try:
            with wakespans.processing(wake, delivery) as current:
                self._run_spans[wake.session_id] = current.get_span_context()
                outcome = await self._work(wake, delivery)
        except LeaseBusy:
            self.lease_handbacks += 1
            logger.info("lease held elsewhere all along; handing the wake-up back", extra={"fields": fields})
            await settle(delivery.nak(delay=self._busy_delay_s), wake=wake)
            return
        except asyncio.CancelledError:
            logger.info("shutdown before the session finished; handing it back", extra={"fields": fields})
            await settle(delivery.nak(), wake=wake)
            raise
        except LeaseUnavailable as exc:  # NATS electing a leader, or down: not a failure of the run
            failed = {**fields, "error": repr(exc.__cause__)}
            logger.warning("the lease bucket did not answer; handing the wake-up back", extra={"fields": failed})
            await settle(delivery.nak(delay=redelivery_delay(delivery.num_delivered)), wake=wake)
            return
        except Exception:
            logger.exception("session run failed", extra={"fields": fields})
            await settle(delivery.nak(delay=redelivery_delay(delivery.num_delivered)), wake=wake)
            return
        finally:
            self._done_with(wake.session_id)
            self._run_spans.pop(wake.session_id, None)
            self._run_deliveries.pop(wake.session_id, None)
        logger.info("session run ended", extra={"fields": {**fields, "outcome": outcome.value}})
        if outcome is Outcome.DONE:
            await settle(delivery.ack(), wake=wake)
        elif outcome is Outcome.REJECTED:
            await settle(delivery.term(), wake=wake)
        else:
            await settle(delivery.nak(delay=redelivery_delay(delivery.num_delivered)), wake=wake)

    async def _work(self, wake: rpc.Wake, delivery: WakeDelivery) -> Outcome:
        """Run the session; when its lease is held elsewhere, watch the lease until it is worth
        taking: only when the watch said it is free is it tried again (a ``create`` between two waits
        could land in the moment a holder let go before this wake-up's input and is about to take it
        back, and run the turn after a hand-off)."""
        waited = expired = False
        over: int | None = None
        deadline = asyncio.get_running_loop().time() + self._lease_wait_s
        while True:
            try:
                return await self._hold_and_run(
                    wake.session_id, wake.seq, delivery, waited=waited, over=over, expired=expired
                )
            except LeaseBusy:
                if not waited:
                    self.lease_waits += 1
                    waited = True
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise LeaseBusy(wake.session_id)
                # Keep the wake-up ours meanwhile: the wait may be longer than the ack wait's third.
                with contextlib.suppress(Exception):
                    await delivery.in_progress()
                released = await self._await_release(wake, timeout_s=min(left, self._ack_wait_s / 3))
                if released.kind == "served":
                    self.lease_served += 1
                    logger.info(
                        "the holder let the session go having served this wake-up",
                        extra={"fields": {"session_id": wake.session_id, "seq": wake.seq}},
                    )
                    return Outcome.DONE
                if released.kind == "free":
                    over, expired = released.over, released.expired
                    break

    async def _await_release(self, wake: rpc.Wake, *, timeout_s: float) -> Released:
        """``Leases.await_release``, cut short when this worker's expiry watch sees the lease expire
        (it saw every renewal as it came, where the wait's own watch only started now)."""
        # Told already (the expiry came as the wake-up was fetched), or from now on.
        expired = self._waiters.setdefault(wake.session_id, asyncio.get_running_loop().create_future())
        waiting = asyncio.ensure_future(
            self._leases.await_release(wake.session_id, wake_seq=wake.seq, timeout_s=timeout_s)
        )
        try:
            either: set[asyncio.Future[Any]] = {waiting, expired}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self._waiters.get(wake.session_id) is expired:
                del self._waiters[wake.session_id]
            if not waiting.done():
                waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
        if waiting.done() and not waiting.cancelled():
            return waiting.result()
        return Released("free", over=expired.result(), expired=True)

    async def _hold_and_run(
        self,
        session_id: str,
        min_seq: int,
        delivery: WakeDelivery | None,
        *,
        waited: bool,
        over: int | None = None,
        expired: bool = False,
    ) -> Outcome:
        """Take the lease (``LeaseBusy`` if held), run the session until it has nothing to do, let
        it go; then look at the log once more and take the session back at once if input was
        logged after the last decision (a waiting wake-up for it leaves it to us)."""
        retaking = False
        while True:
            try:
                lease, outcome = await self._run_held(
                    session_id, min_seq, delivery, waited=waited, over=over, expired=expired
                )
            except LeaseBusy:
                if retaking:  # another worker took it for that input: it is theirs now
                    return Outcome.DONE
                raise
            settled = lease.settled_through
            if outcome is not Outcome.DONE or settled is None or lease.lost.is_set():
                return outcome
            try:
                moved = await self._runner.logged_after(session_id, settled)
            except Exception:  # whoever has a wake-up for it takes it (after the grace)
                logger.warning("could not look at the log after letting the session go", exc_info=True)
                return outcome
            if not moved:
                return outcome
            self.retaken += 1
            logger.info(
                "input logged as the session was let go; taking it back",
                extra={"fields": {"session_id": session_id, "settled_through": settled}},
            )
            waited, retaking, over, expired = False, True, None, False
            min_seq = settled + 1

    async def _run_held(
        self,
        session_id: str,
        min_seq: int,
        delivery: WakeDelivery | None,
        *,
        waited: bool,
        over: int | None,
        expired: bool = False,
    ) -> tuple[HeldLease, Outcome]:
        """One hold of the lease: runs until nothing is left (again for wake-ups that joined)."""
        async with self._leases.hold(session_id, over=over) as lease, asyncio.TaskGroup() as tg:
            if waited:
                lease.handed_off, lease.after_expiry = True, expired
                self.lease_handoffs += 1
                metrics.LEASE_TAKEOVERS.inc()
                logger.info(
                    "took the lease after waiting for its holder",
                    extra={"fields": {"session_id": session_id, "expired": expired}},
                )
            heartbeat = (
                tg.create_task(keep_alive(delivery, every_s=self._ack_wait_s / 3, sleep=self._sleep))
                if delivery is not None
                else None
            )
            self._holding[session_id] = 0
            self._waiters.pop(session_id, None)  # an expiry it was told of is the lease it now holds
            self._told.pop(session_id, None)
            try:
                while True:
                    lease.settled_through = None
                    outcome = await self._runner.run(session_id, lease, min_seq=min_seq)
                    joined = self._holding[session_id]
                    if outcome is not Outcome.DONE or not joined:
                        return lease, outcome
                    self._holding[session_id] = 0
                    min_seq = joined
            finally:
                # Synchronously, before the lease is released: a wake-up from now on waits for it.
                del self._holding[session_id]
                if heartbeat is not None:
                    heartbeat.cancel()
