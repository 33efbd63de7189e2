from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from corral.harness import wakespans
from corral.harness.lease import HeldLease, Leases
from corral.harness.turn import Outcome
from corral.harness.wake import WakeLoop
from corral.harness.wakesettle import redelivery_delay
from corral.telemetry import inject
from tests.unit.harness.fakes import SESSION_ID, FakeBucket, FakeDelivery, FakeSource, SteppedSleep, wake_delivery
from tests.waiting import eventually


class FakeRunner:
    def __init__(self, outcome: Outcome = Outcome.DONE, *, block: bool = False, error: Exception | None = None) -> None:
        self.outcome = outcome
        self.block = block
        self.error = error
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.calls: list[tuple[str, int]] = []
        self.leases: list[HeldLease] = []
        self.settle_at: list[int] = []
        """Log positions each run's last decision is on (``lease.settled_through``), one per run."""
        self.log_end = 0
        """The log's last sequence, as ``logged_after`` sees it after a run let the session go."""
        self.looked_after: list[int] = []

    async def run(self, session_id: str, lease: HeldLease, *, min_seq: int = 0) -> Outcome:
        self.calls.append((session_id, min_seq))
        self.leases.append(lease)
        self.started.set()
        if self.block:
            await self.release.wait()
        if self.error is not None:
            raise self.error
        if self.outcome is Outcome.DONE and self.settle_at:
            lease.settled_through = self.settle_at.pop(0)
        return self.outcome

    async def logged_after(self, session_id: str, seq: int) -> bool:
        self.looked_after.append(seq)
        return self.log_end > seq


class Harness:
    def __init__(
        self,
        runner: FakeRunner,
        *,
        concurrency: int = 4,
        grace_s: float = 10.0,
        lease_wait_s: float = 5.0,
        bucket: FakeBucket | None = None,
        holder: str = "worker-1",
        ack_wait_s: float = 30.0,
    ) -> None:
        self.source = FakeSource()
        self.bucket = bucket or FakeBucket()
        self.heartbeat_sleep = SteppedSleep()
        self.runner = runner
        self.loop = WakeLoop(
            self.source,
            leases=Leases(self.bucket, holder=holder, ttl_s=9.0, sleep=SteppedSleep()),
            runner=runner,
            concurrency=concurrency,
            ack_wait_s=ack_wait_s,
            shutdown_grace_s=grace_s,
            lease_wait_s=lease_wait_s,
            sleep=self.heartbeat_sleep,
        )
        self.stop = asyncio.Event()

    async def deliver(self, delivery: FakeDelivery) -> None:
        self.source.queue.put_nowait(delivery)


async def run_until_settled(harness: Harness, *deliveries: FakeDelivery) -> None:
    task = asyncio.create_task(harness.loop.run(harness.stop))
    for delivery in deliveries:
        await harness.deliver(delivery)
    async with asyncio.timeout(5):
        for delivery in deliveries:
            await delivery.done.wait()
    harness.stop.set()
    async with asyncio.timeout(5):
        await task


async def test_a_session_with_nothing_left_to_do_is_acked_and_its_lease_released() -> None:
    harness = Harness(FakeRunner(Outcome.DONE))
    delivery = wake_delivery(seq=42)

    await run_until_settled(harness, delivery)

    assert delivery.settled == [("ack", None)]
    assert harness.runner.calls == [(SESSION_ID, 42)]
    assert harness.bucket.entries == {}


async def test_a_session_leased_elsewhere_all_along_is_handed_back_after_the_wait() -> None:
    harness = Harness(FakeRunner(), lease_wait_s=0.1)
    harness.bucket.steal(SESSION_ID)
    delivery = wake_delivery()

    await run_until_settled(harness, delivery)

    assert delivery.settled == [("nak", 1.0)]
    assert harness.runner.calls == []
    assert (harness.loop.lease_waits, harness.loop.lease_handoffs, harness.loop.lease_handbacks) == (1, 0, 1)


async def test_a_wake_up_that_finds_the_session_leased_takes_it_as_soon_as_it_is_released() -> None:
    harness = Harness(FakeRunner())
    harness.bucket.steal(SESSION_ID)
    delivery = wake_delivery(seq=7)
    task = asyncio.create_task(harness.loop.run(harness.stop))
    await harness.deliver(delivery)
    async with asyncio.timeout(5):
        await harness.bucket.watching.wait()

    harness.bucket.release(SESSION_ID)  # the holder lets go: no fixed delay, the waiter runs now
    async with asyncio.timeout(5):
        await delivery.done.wait()
    harness.stop.set()
    await task

    assert delivery.settled == [("ack", None)]
    assert harness.runner.calls == [(SESSION_ID, 7)]
    assert (harness.loop.lease_waits, harness.loop.lease_handoffs, harness.loop.lease_handbacks) == (1, 1, 0)
    [lease] = harness.runner.leases
    assert (lease.handed_off, lease.after_expiry) == (True, False)


async def test_an_unreadable_wake_up_is_terminated() -> None:
    harness = Harness(FakeRunner())
    delivery = FakeDelivery(data=b"{not json")

    await run_until_settled(harness, delivery)

    assert delivery.settled == [("term", None)]


@pytest.mark.parametrize(
    ("outcome", "settled"),
    [
        (Outcome.LOST, ("nak", redelivery_delay(3))),
        (Outcome.RETRY_LATER, ("nak", redelivery_delay(3))),
        (Outcome.REJECTED, ("term", None)),
    ],
)
async def test_each_outcome_settles_the_wake_up_its_own_way(outcome: Outcome, settled: tuple[str, float]) -> None:
    harness = Harness(FakeRunner(outcome))
    delivery = wake_delivery(num_delivered=3)

    await run_until_settled(harness, delivery)

    assert delivery.settled == [settled]


async def test_a_crashing_session_is_handed_back_with_backoff_and_the_worker_carries_on() -> None:
    harness = Harness(FakeRunner(error=RuntimeError("bug")))
    first, second = wake_delivery(num_delivered=2), wake_delivery("sesn_other", num_delivered=1)

    await run_until_settled(harness, first, second)

    assert first.settled == [("nak", redelivery_delay(2))]
    assert second.settled == [("nak", redelivery_delay(1))]
    assert harness.bucket.entries == {}


async def test_a_wake_up_whose_lease_write_goes_unanswered_is_handed_back_as_a_warning_not_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A NATS node killed: the lease bucket elects a leader and leaves the write unanswered. The run has
    # not started; the wake-up comes back after the backoff, and no error (with its traceback) is logged.
    harness = Harness(FakeRunner())
    harness.bucket.fail_writes = [TimeoutError("nats: timeout")]
    delivery = wake_delivery(num_delivered=2)

    with caplog.at_level("WARNING", logger="corral.harness"):
        await run_until_settled(harness, delivery)

    assert delivery.settled == [("nak", redelivery_delay(2))]
    assert harness.runner.calls == []
    assert [r.levelname for r in caplog.records if r.name == "corral.harness.wake"] == ["WARNING"]
    assert "did not answer" in caplog.records[-1].getMessage()


def test_redelivery_backoff_doubles_and_is_capped() -> None:
    assert [redelivery_delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert redelivery_delay(50) == 30.0


async def test_a_long_session_keeps_its_wake_up_alive_with_in_progress() -> None:
    runner = FakeRunner(block=True)
    harness = Harness(runner)
    delivery = wake_delivery()
    task = asyncio.create_task(harness.loop.run(harness.stop))
    await harness.deliver(delivery)
    async with asyncio.timeout(5):
        await runner.started.wait()
        await harness.heartbeat_sleep.parked.wait()
        harness.heartbeat_sleep.tick()
        await harness.heartbeat_sleep.parked.wait()

    assert delivery.heartbeats == 1
    assert harness.loop.active == {SESSION_ID}
    runner.release.set()
    harness.stop.set()
    async with asyncio.timeout(5):
        await task
    assert delivery.settled == [("ack", None)]


async def test_a_busy_worker_fetches_nothing_until_a_slot_frees_up() -> None:
    runner = FakeRunner(block=True)
    harness = Harness(runner, concurrency=1)
    first, second = wake_delivery(), wake_delivery("sesn_other")
    task = asyncio.create_task(harness.loop.run(harness.stop))
    await harness.deliver(first)
    await harness.deliver(second)
    async with asyncio.timeout(5):
        await runner.started.wait()
    fetches = harness.source.fetches
    for _ in range(20):
        await asyncio.sleep(0)

    assert harness.source.fetches == fetches
    assert runner.calls == [(SESSION_ID, 1)]
    runner.release.set()
    async with asyncio.timeout(5):
        await second.done.wait()
    harness.stop.set()
    async with asyncio.timeout(5):
        await task
    assert [c[0] for c in runner.calls] == [SESSION_ID, "sesn_other"]


async def test_on_shutdown_a_running_session_may_finish_within_the_grace_period() -> None:
    runner = FakeRunner(block=True)
    harness = Harness(runner, grace_s=60.0)
    delivery = wake_delivery()
    task = asyncio.create_task(harness.loop.run(harness.stop))
    await harness.deliver(delivery)
    async with asyncio.timeout(5):
        await runner.started.wait()

    harness.stop.set()
    runner.release.set()
    async with asyncio.timeout(5):
        await task

    assert delivery.settled == [("ack", None)]


async def test_on_shutdown_a_session_still_running_after_the_grace_is_handed_back_and_its_lease_released() -> None:
    runner = FakeRunner(block=True)
    harness = Harness(runner, grace_s=0.0)
    delivery = wake_delivery()
    task = asyncio.create_task(harness.loop.run(harness.stop))
    await harness.deliver(delivery)
    async with asyncio.timeout(5):
        await runner.started.wait()
    assert SESSION_ID in harness.bucket.entries

    harness.stop.set()
    async with asyncio.timeout(5):
        await task

    assert delivery.settled == [("nak", None)]
    assert harness.bucket.entries == {}


async def test_a_wake_up_for_a_session_this_worker_runs_joins_the_run_which_looks_again_before_letting_go() -> None:
    runner = FakeRunner(block=True)
    harness = Harness(runner)
    first, second = wake_delivery(seq=3), wake_delivery(seq=9)
    task = asyncio.create_task(harness.loop.run(harness.stop))
    await harness.deliver(first)
    async with asyncio.timeout(5):
        await runner.started.wait()
    await harness.deliver(second)
    async with asyncio.timeout(5):
        await second.done.wait()  # acked at once: the running run takes it
    runner.release.set()
    async with asyncio.timeout(5):
        await first.done.wait()
    harness.stop.set()
    await task

    assert second.settled == [("ack", None)] and first.settled == [("ack", None)]
    assert runner.calls == [(SESSION_ID, 3), (SESSION_ID, 9)]  # ran again, same lease, before releasing
    assert runner.leases[0] is runner.leases[1]
    assert harness.bucket.entries == {}
    assert (harness.loop.joined, harness.loop.lease_waits) == (1, 0)


async def test_a_redelivery_of_the_wake_up_a_run_holds_is_not_acked_so_the_runs_retry_later_stands() -> None:
    """The run's ack wait ran out (its heartbeats failed while a NATS node was down), so the same
    message came back while the run still held it; the run then ends ``retry_later``. Acking the
    redelivery would settle the message and the run's nak would be ignored: the session's input never
    processed (found by the fault suite's NATS follower kill)."""
    runner = FakeRunner(Outcome.RETRY_LATER, block=True)
    harness = Harness(runner)
    first, again = wake_delivery(seq=3), wake_delivery(seq=3, num_delivered=2)
    task = asyncio.create_task(harness.loop.run(harness.stop))
    await harness.deliver(first)
    async with asyncio.timeout(5):
        await runner.started.wait()
    await harness.deliver(again)

    async def joined() -> bool:
        return harness.loop.joined == 1 and (again.heartbeats > 0 or bool(again.settled))

    await eventually(joined, timeout=5)
    runner.release.set()
    async with asyncio.timeout(5):
        await first.done.wait()
    harness.stop.set()
    await task

    assert again.settled == [] and again.heartbeats == 1  # left to the run, its ack wait pushed back
    assert first.settled == [("nak", redelivery_delay(1))]


# --- lease hand-offs: expiry, a holder that served the wake-up, a holder that takes the session back ----------
async def expired_under_watch(harness: Harness) -> asyncio.Task[None]:
    """The harness's loop, started; once it watches every lease, ``SESSION_ID``'s expires."""
    task = asyncio.create_task(harness.loop.run(harness.stop))
    async with asyncio.timeout(5):
        await harness.bucket.watching_all.wait()
    harness.bucket.expire(SESSION_ID)
    return task


async def test_a_session_whose_lease_expires_is_taken_over_without_waiting_for_its_wake_up() -> None:
    harness = Harness(FakeRunner())
    harness.bucket.steal(SESSION_ID)  # a worker that then died
    task = await expired_under_watch(harness)
    async with asyncio.timeout(5):
        await harness.runner.started.wait()
    harness.stop.set()
    async with asyncio.timeout(5):
        await task

    assert harness.runner.calls == [(SESSION_ID, 0)]
    assert harness.loop.takeovers == 1
    assert harness.bucket.entries == {}, "the takeover let the session go after its run"


async def test_a_lease_that_expires_while_every_slot_is_busy_is_taken_over_once_one_frees() -> None:
    # The harness-kill soak (200 sessions, 8 slots a worker): a session's lease expired while every
    # worker's slots were busy, each worker's expiry watch passed it over, and its wake-up had been
    # acked (it had joined the run of the holder that died): the session stayed running, unleased, for good.
    runner = FakeRunner(block=True)
    harness = Harness(runner, concurrency=1)
    harness.bucket.steal(SESSION_ID)  # a worker that then died
    task = asyncio.create_task(harness.loop.run(harness.stop))
    await harness.deliver(wake_delivery("sesn_other", seq=3))
    async with asyncio.timeout(5):
        await runner.started.wait()  # the one slot is busy
        await harness.bucket.watching_all.wait()

    harness.bucket.drained.clear()
    harness.bucket.expire(SESSION_ID)
    async with asyncio.timeout(5):
        await harness.bucket.drained.wait()  # the watch has seen the expiry, with no slot free
    runner.release.set()  # the slot frees

    async def taken_over() -> bool:
        return (SESSION_ID, 0) in runner.calls and harness.loop.takeovers == 1

    await eventually(taken_over, timeout=5)
    harness.stop.set()
    async with asyncio.timeout(5):
        await task
    assert harness.bucket.entries == {}, "the takeover let the session go after its run"


async def test_a_lease_that_expires_under_the_run_holding_it_is_taken_over_when_that_run_ends_lost() -> None:
    # The F20 partition: the session's lease expired while every harness was busy with the session
    # (one running it, two taking it over); each left the expiry to that work, which ended without the
    # lease, and the session stayed running with no holder until a session-store restarted.
    runner = FakeRunner(Outcome.LOST, block=True)
    harness = Harness(runner)
    task = asyncio.create_task(harness.loop.run(harness.stop))
    delivery = wake_delivery(seq=5)
    await harness.deliver(delivery)
    async with asyncio.timeout(5):
        await runner.started.wait()  # the run holds the lease
        await harness.bucket.watching_all.wait()

    harness.bucket.drained.clear()
    harness.bucket.expire(SESSION_ID)  # its renewals stopped landing
    async with asyncio.timeout(5):
        await harness.bucket.drained.wait()  # the watch has told the expiry, during the run
    runner.block = False
    runner.release.set()  # the run ends, lost (the takeover's run, unblocked, ends the same way)

    async def taken_over() -> bool:
        return runner.calls == [(SESSION_ID, 5), (SESSION_ID, 0)] and harness.loop.takeovers == 1

    await eventually(taken_over, timeout=5)
    harness.stop.set()
    async with asyncio.timeout(5):
        await task
    assert delivery.settled == [("nak", redelivery_delay(1))]
    assert harness.bucket.entries == {}, "the takeover let the session go after its run"


async def test_a_takeover_whose_lease_write_goes_unanswered_is_tried_again_until_it_runs() -> None:
    # The harness-kill soak at 100 slots a worker: the write taking an expired lease timed out on the
    # client ("nats: timeout"); the takeover was dropped, its wake-up had been acked, and the session
    # stayed running with no holder.
    harness = Harness(FakeRunner())
    harness.bucket.steal(SESSION_ID)  # a worker that then died
    harness.bucket.fail_writes = [TimeoutError("nats: timeout"), TimeoutError("nats: timeout")]
    task = await expired_under_watch(harness)
    for _ in range(2):  # each unanswered write waits before the next try
        async with asyncio.timeout(5):
            await harness.heartbeat_sleep.parked.wait()
        harness.heartbeat_sleep.tick()
    async with asyncio.timeout(5):
        await harness.runner.started.wait()
    harness.stop.set()
    async with asyncio.timeout(5):
        await task

    assert harness.runner.calls == [(SESSION_ID, 0)]
    assert harness.loop.takeovers == 1
    assert [call[0] for call in harness.bucket.calls if call[0] in ("create", "update")] == ["create"] * 3


async def test_a_takeover_whose_run_ends_retry_later_is_run_again_until_it_ends_otherwise() -> None:
    # The F20 partition: a takeover decided on a fold behind the log (a lookup of its end answered
    # behind it); its steps were refused until the run gave up for later. A takeover has no
    # wake-up to hand back, so nobody would have run the session again: it stayed running, unleased.
    class LaterThenDone(FakeRunner):
        async def run(self, session_id: str, lease: HeldLease, *, min_seq: int = 0) -> Outcome:
            await super().run(session_id, lease, min_seq=min_seq)
            return Outcome.RETRY_LATER if len(self.calls) == 1 else Outcome.DONE

    harness = Harness(LaterThenDone())
    harness.bucket.steal(SESSION_ID)  # a worker that then died
    task = await expired_under_watch(harness)
    async with asyncio.timeout(5):
        await harness.heartbeat_sleep.parked.wait()  # waiting before the second try
    harness.heartbeat_sleep.tick()

    async def ran_twice() -> bool:
        return len(harness.runner.calls) == 2 and harness.loop.takeovers == 1

    await eventually(ran_twice, timeout=5)
    harness.stop.set()
    async with asyncio.timeout(5):
        await task
    assert harness.runner.calls == [(SESSION_ID, 0), (SESSION_ID, 0)]
    assert harness.bucket.entries == {}, "the second run let the session go"
    assert [call[0] for call in harness.bucket.calls if call[0] in ("create", "update")] == ["create", "create"]


async def test_a_waiting_wake_up_that_gets_the_lease_when_it_expires_runs_as_a_takeover() -> None:
    harness = Harness(FakeRunner())
    harness.bucket.steal(SESSION_ID)  # a worker that then died
    delivery = wake_delivery(seq=7)  # its wake-up, redelivered
    task = asyncio.create_task(harness.loop.run(harness.stop))
    await harness.deliver(delivery)
    async with asyncio.timeout(5):
        await harness.bucket.watching.wait()

    harness.bucket.expire(SESSION_ID)
    async with asyncio.timeout(5):
        await delivery.done.wait()
    harness.stop.set()
    await task

    assert harness.runner.calls == [(SESSION_ID, 7)]
    [lease] = harness.runner.leases
    assert (lease.handed_off, lease.after_expiry) == (True, True), "a takeover was taken for a hand-off"


async def test_a_waiting_wake_up_whose_input_the_holder_served_is_acked_without_a_run() -> None:
    harness = Harness(FakeRunner())
    harness.bucket.steal(SESSION_ID)
    delivery = wake_delivery(seq=7)
    task = asyncio.create_task(harness.loop.run(harness.stop))
    await harness.deliver(delivery)
    async with asyncio.timeout(5):
        await harness.bucket.watching.wait()

    harness.bucket.release(SESSION_ID, released_through=9)  # its last decision was on the log up to 9
    async with asyncio.timeout(5):
        await delivery.done.wait()
    harness.stop.set()
    await task

    assert delivery.settled == [("ack", None)]
    assert harness.runner.calls == []
    assert harness.loop.lease_served == 1


async def test_a_waiting_wake_up_for_input_past_the_release_leaves_the_session_to_its_holder() -> None:
    harness = Harness(FakeRunner())
    harness.bucket.steal(SESSION_ID)
    delivery = wake_delivery(seq=12)
    task = asyncio.create_task(harness.loop.run(harness.stop))
    await harness.deliver(delivery)
    async with asyncio.timeout(5):
        await harness.bucket.watching.wait()

    before = len(harness.bucket.calls)
    harness.bucket.release(SESSION_ID, released_through=9)  # input 12 was logged as it let go
    async with asyncio.timeout(5):
        await harness.bucket.drained.wait()  # the waiter has seen the release, and waits on
    after = harness.bucket.calls[before:]
    assert [c for c in after if c[0] == "create"] == [], "the waiter raced the holder back"
    harness.bucket.steal(SESSION_ID)  # the holder, looking at the log after letting go, takes it back
    harness.bucket.release(SESSION_ID, released_through=12)
    async with asyncio.timeout(5):
        await delivery.done.wait()
    harness.stop.set()
    await task

    assert delivery.settled == [("ack", None)]
    assert harness.runner.calls == []
    assert (harness.loop.lease_handoffs, harness.loop.lease_served) == (0, 1)


async def test_a_holder_takes_the_session_back_when_input_was_logged_as_it_let_go() -> None:
    runner = FakeRunner()
    runner.settle_at = [5, 8]  # the first run decided on the log up to 5 ...
    runner.log_end = 8  # ... and records up to 8 were logged as it let go
    harness = Harness(runner)
    delivery = wake_delivery(seq=5)

    await run_until_settled(harness, delivery)

    assert delivery.settled == [("ack", None)]
    assert runner.calls == [(SESSION_ID, 5), (SESSION_ID, 6)]
    assert runner.looked_after == [5, 8]
    assert harness.loop.retaken == 1
    assert not any(lease.handed_off for lease in runner.leases)
    # each release is one delete (naming how far the holder got)
    releases = [c for c in harness.bucket.calls if c[0] in ("update", "delete")]
    assert [c[0] for c in releases] == ["delete", "delete"]
    assert harness.bucket.entries == {}


class LookingRunner(FakeRunner):
    """A runner whose look at the log after letting the session go waits for ``looking_on``."""

    def __init__(self) -> None:
        super().__init__(block=True)
        self.looking = asyncio.Event()
        self.looking_on = asyncio.Event()

    async def logged_after(self, session_id: str, seq: int) -> bool:
        self.looking.set()
        await self.looking_on.wait()
        return await super().logged_after(session_id, seq)


async def test_a_wake_up_whose_watch_starts_after_the_holder_let_go_leaves_the_session_to_the_holder() -> None:
    # Two workers share the bucket. Worker 1 runs the session; input 12 is logged as it decides on
    # the log up to 9, and worker 2 fetches its wake-up. Worker 2's ``create`` fails, and its watch of
    # the lease starts only after worker 1 let go (through 9) and before worker 1, looking at the log
    # again, takes the session back: worker 2 must read the release as the key's present state and
    # leave the session to worker 1, never run a turn after a hand-off.
    bucket = FakeBucket()
    holder_runner = LookingRunner()
    holder_runner.settle_at = [9, 12]
    holder_runner.log_end = 12
    holder = Harness(holder_runner, bucket=bucket, holder="worker-1")
    waiter = Harness(FakeRunner(), bucket=bucket, holder="worker-2")
    first, late = wake_delivery(seq=5), wake_delivery(seq=12)
    running = [asyncio.create_task(h.loop.run(h.stop)) for h in (holder, waiter)]
    await holder.deliver(first)
    async with asyncio.timeout(5):
        await holder_runner.started.wait()
    bucket.watch_gate = asyncio.Event()  # the waiter's watch starts late

    await waiter.deliver(late)
    async with asyncio.timeout(5):
        await bucket.watch_asked.wait()  # its create failed: it waits
    holder_runner.release.set()  # the run ends on the log up to 9 and lets go ...
    async with asyncio.timeout(5):
        await holder_runner.looking.wait()  # ... and is about to look at the log again
    bucket.watch_gate.set()  # the waiter's watch starts now: the release is the key's present state
    async with asyncio.timeout(5):
        await bucket.drained.wait()
    holder_runner.looking_on.set()  # the holder sees input 12 and takes the session back
    async with asyncio.timeout(5):
        await first.done.wait()
        await late.done.wait()
    for h in (holder, waiter):
        h.stop.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*running)

    assert waiter.runner.calls == [], "the waiter ran the session after a hand-off"
    assert (waiter.loop.lease_handoffs, waiter.loop.lease_served) == (0, 1)
    assert holder_runner.calls == [(SESSION_ID, 5), (SESSION_ID, 10)]
    assert holder.loop.retaken == 1
    assert (first.settled, late.settled) == ([("ack", None)], [("ack", None)])
    assert bucket.entries == {}


async def test_a_wake_up_whose_wait_ran_out_watches_again_before_it_takes_the_lease() -> None:
    # The waiter's watch runs for a third of the ack wait at a time. When one ends with the lease
    # still held, the waiter must not just try ``create`` again: the holder may let go before its
    # input and be about to take the session back, so it reads the lease again first.
    bucket = FakeBucket()
    holder_runner = LookingRunner()
    holder_runner.settle_at = [9, 12]
    holder_runner.log_end = 12
    holder = Harness(holder_runner, bucket=bucket, holder="worker-1")
    waiter = Harness(FakeRunner(), bucket=bucket, holder="worker-2", ack_wait_s=0.3)  # watches of 0.1 s
    first, late = wake_delivery(seq=5), wake_delivery(seq=12)
    running = [asyncio.create_task(h.loop.run(h.stop)) for h in (holder, waiter)]
    await holder.deliver(first)
    async with asyncio.timeout(5):
        await holder_runner.started.wait()
    await waiter.deliver(late)
    async with asyncio.timeout(5):
        await bucket.watching.wait()  # its create failed: it watches
    bucket.create_gate = asyncio.Event()
    bucket.asked.clear()
    async with asyncio.timeout(5):
        await bucket.asked.wait()  # the watch ran out with the lease still held: it reads the lease again
    holder_runner.release.set()  # the run ends on the log up to 9 and lets go ...
    async with asyncio.timeout(5):
        await holder_runner.looking.wait()  # ... and is about to look at the log again
    bucket.create_gate.set()
    holder_runner.looking_on.set()  # the holder sees input 12 and takes the session back
    async with asyncio.timeout(5):
        await first.done.wait()
        await late.done.wait()
    for h in (holder, waiter):
        h.stop.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*running)

    assert waiter.runner.calls == [], "the waiter ran the session after a hand-off"
    assert (waiter.loop.lease_handoffs, waiter.loop.lease_served) == (0, 1)
    assert holder_runner.calls == [(SESSION_ID, 5), (SESSION_ID, 10)]
    assert (first.settled, late.settled) == ([("ack", None)], [("ack", None)])


async def test_a_wake_up_that_joins_a_run_gets_a_span_in_its_own_trace_linked_to_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each wake-up's span is a child of its publisher's (the trace context in its headers); one
    that joins a run already going cannot be the run's parent, so its span, in its own trace, links
    to the run's span."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr(wakespans, "_tracer", tracer)
    with tracer.start_as_current_span("first sender") as first_sender:
        first_headers = inject({})
    with tracer.start_as_current_span("second sender") as second_sender:
        second_headers = inject({})
    runner = FakeRunner(block=True)
    harness = Harness(runner)
    first, second = wake_delivery(seq=3), wake_delivery(seq=9)
    first.headers, second.headers = first_headers, second_headers
    task = asyncio.create_task(harness.loop.run(harness.stop))
    await harness.deliver(first)
    async with asyncio.timeout(5):
        await runner.started.wait()
    await harness.deliver(second)
    async with asyncio.timeout(5):
        await second.done.wait()
    runner.release.set()
    async with asyncio.timeout(5):
        await first.done.wait()
    harness.stop.set()
    await task

    run, joined = sorted(
        (s for s in spans.get_finished_spans() if s.name.startswith("process")),
        key=lambda s: bool((s.attributes or {}).get("corral.joined_run")),
    )
    assert run.parent is not None and run.parent.span_id == first_sender.get_span_context().span_id
    assert joined.parent is not None and joined.parent.span_id == second_sender.get_span_context().span_id
    assert joined.context.trace_id == second_sender.get_span_context().trace_id != run.context.trace_id
    assert [link.context.span_id for link in joined.links] == [run.context.span_id]
