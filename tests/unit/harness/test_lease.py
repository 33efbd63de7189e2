from __future__ import annotations

import asyncio
import json

import pytest

from corral.bus import BusError, Change
from corral.harness.lease import Expired, HeldLease, LeaseBusy, Leases, Released
from tests.unit.harness.fakes import SESSION_ID, FakeBucket, SteppedSleep


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def leases(bucket: FakeBucket, sleep: SteppedSleep, clock: Clock | None = None, ttl_s: float = 9.0) -> Leases:
    return Leases(bucket, holder="worker-1", ttl_s=ttl_s, sleep=sleep, monotonic=clock or Clock())


async def renewal(sleep: SteppedSleep) -> None:
    """Let one renewal run and park in its next sleep."""
    sleep.tick()
    async with asyncio.timeout(5):
        await sleep.parked.wait()


async def test_holding_a_lease_writes_holder_and_a_fresh_token_and_releases_it_after() -> None:
    bucket = FakeBucket()
    sleep = SteppedSleep()
    tokens = []

    for _ in range(2):
        async with leases(bucket, sleep).hold(SESSION_ID) as lease:
            value = json.loads(bucket.entries[SESSION_ID][0])
            assert value["holder"] == "worker-1"
            assert value["token"] == lease.token
            assert "acquired_at" in value
            tokens.append(lease.token)

    assert SESSION_ID not in bucket.entries
    assert tokens[0] != tokens[1]
    assert ("delete", SESSION_ID, 3) in bucket.calls  # revision 2 was the first delete


async def test_a_worker_takes_back_a_lease_it_let_go_over_its_own_delete_mark() -> None:
    """The next turn of a session is mostly this worker's again: its create names the mark its
    release left, which the bucket takes in one write. A release that did not happen names none."""
    bucket = FakeBucket()
    sleep = SteppedSleep()
    worker = leases(bucket, sleep)

    async with worker.hold(SESSION_ID):
        pass
    mark = bucket.marks[SESSION_ID].revision
    async with worker.hold(SESSION_ID) as lease:
        bucket.steal(SESSION_ID)  # the release finds the key changed: it leaves no mark of its own
    async with worker.hold("sesn_other"):
        pass
    bucket.release(SESSION_ID)
    async with worker.hold(SESSION_ID):
        pass

    assert lease.revision != mark
    assert bucket.create_hints == [None, mark, None, None]


async def test_a_lease_someone_else_holds_is_busy() -> None:
    bucket = FakeBucket()
    bucket.steal(SESSION_ID)

    with pytest.raises(LeaseBusy):
        async with leases(bucket, SteppedSleep()).hold(SESSION_ID):
            pytest.fail("the block must not run")

    assert bucket.entries[SESSION_ID][0] == b'{"holder":"someone-else"}'


async def test_the_lease_is_renewed_every_third_of_its_ttl_with_the_last_revision() -> None:
    bucket = FakeBucket()
    sleep = SteppedSleep()
    delays: list[float] = []

    async def recording(delay: float) -> None:
        delays.append(delay)
        await sleep(delay)

    lease_manager = Leases(bucket, holder="worker-1", ttl_s=9.0, sleep=recording, monotonic=Clock())
    async with lease_manager.hold(SESSION_ID) as lease:
        async with asyncio.timeout(5):
            await sleep.parked.wait()
        await renewal(sleep)
        await renewal(sleep)
        assert lease.revision == 3
        assert not lease.lost.is_set()

    assert [c for c in bucket.calls if c[0] == "update"] == [("update", SESSION_ID, 1), ("update", SESSION_ID, 2)]
    assert delays[0] == 3.0
    assert bucket.calls[-1] == ("delete", SESSION_ID, 3)


async def test_a_renewal_that_finds_the_key_changed_loses_the_lease_and_leaves_the_key_alone() -> None:
    bucket = FakeBucket()
    sleep = SteppedSleep()
    async with leases(bucket, sleep).hold(SESSION_ID) as lease:
        async with asyncio.timeout(5):
            await sleep.parked.wait()
        bucket.steal(SESSION_ID)
        sleep.tick()
        async with asyncio.timeout(5):
            await lease.lost.wait()

    assert not any(c[0] == "delete" for c in bucket.calls)
    assert bucket.entries[SESSION_ID][0] == b'{"holder":"someone-else"}'


async def test_renewals_failing_for_a_whole_ttl_lose_the_lease() -> None:
    bucket = FakeBucket()
    sleep = SteppedSleep()
    clock = Clock()
    async with leases(bucket, sleep, clock).hold(SESSION_ID) as lease:
        async with asyncio.timeout(5):
            await sleep.parked.wait()
        bucket.fail_update = BusError("nats is down")
        clock.now += 3
        await renewal(sleep)
        assert not lease.lost.is_set()
        clock.now += 6
        sleep.tick()
        async with asyncio.timeout(5):
            await lease.lost.wait()


async def test_the_lease_is_released_when_the_block_fails() -> None:
    bucket = FakeBucket()
    lease_seen: list[HeldLease] = []

    with pytest.raises(ExceptionGroup) as raised:
        async with leases(bucket, SteppedSleep()).hold(SESSION_ID) as lease:
            lease_seen.append(lease)
            raise RuntimeError("boom")

    assert raised.group_contains(RuntimeError)
    assert SESSION_ID not in bucket.entries
    assert lease_seen[0].proof().token == lease_seen[0].token


# --- letting go, and waiting for another holder to let go ---------------------------------------------------
async def test_a_run_that_settled_lets_go_with_one_delete_naming_how_far_it_got() -> None:
    bucket = FakeBucket()
    seen: list[Change] = []

    async def watch() -> None:
        async for change in bucket.changes(SESSION_ID, current=False):
            seen.append(change)
            if change.kind == "delete":
                return

    watching = asyncio.create_task(watch())
    async with asyncio.timeout(5):
        await bucket.watching.wait()
    async with leases(bucket, SteppedSleep()).hold(SESSION_ID) as lease:
        lease.settled_through = 41
    async with asyncio.timeout(5):
        await watching

    assert [c.kind for c in seen] == ["put", "delete"]
    assert json.loads(seen[1].value) == {"holder": "worker-1", "released_through": 41}
    assert bucket.calls[-1] == ("delete", SESSION_ID, 1)
    assert SESSION_ID not in bucket.entries


async def await_release(bucket: FakeBucket, wake_seq: int, ttl_s: float = 9.0) -> asyncio.Task[Released]:
    task = asyncio.create_task(
        leases(bucket, SteppedSleep(), ttl_s=ttl_s).await_release(SESSION_ID, wake_seq=wake_seq, timeout_s=5)
    )
    async with asyncio.timeout(5):
        await bucket.watching.wait()
    return task


@pytest.mark.parametrize(
    ("let_go", "answer"),
    [
        (lambda bucket: bucket.release(SESSION_ID, released_through=7), Released("served")),  # it did our input
        (lambda bucket: bucket.release(SESSION_ID, released_through=9), Released("served")),
        (lambda bucket: bucket.expire(SESSION_ID), Released("free", expired=True)),  # it died: a takeover
        (lambda bucket: bucket.release(SESSION_ID), Released("free")),  # let go without a word (shutdown)
    ],
)
async def test_a_waiter_learns_from_the_watch_whether_its_input_was_served_or_the_lease_is_free(
    let_go: object, answer: Released
) -> None:
    bucket = FakeBucket()
    bucket.steal(SESSION_ID)
    waiting = await await_release(bucket, wake_seq=7)

    let_go(bucket)  # type: ignore[operator]

    async with asyncio.timeout(5):
        assert await waiting == answer


async def test_a_waiter_leaves_a_holder_that_let_go_before_its_input_the_time_to_take_it_back() -> None:
    bucket = FakeBucket()
    bucket.steal(SESSION_ID)
    waiting = await await_release(bucket, wake_seq=7, ttl_s=0.3)  # grace: a third of the TTL

    bucket.release(SESSION_ID, released_through=5)
    async with asyncio.timeout(5):  # nobody takes it back: the holder died after letting go
        assert await waiting == Released("free")


async def test_a_waiter_whose_watch_starts_after_the_release_still_reads_how_far_the_holder_got() -> None:
    # The waiter's ``create`` failed while the holder held the lease; the holder let go before the
    # waiter's watch started, so the release is the key's present state when the watch starts.
    bucket = FakeBucket()
    bucket.steal(SESSION_ID)
    bucket.release(SESSION_ID, released_through=5)  # before the input at 7: the holder takes it back
    waiting = await await_release(bucket, wake_seq=7)
    async with asyncio.timeout(5):
        await bucket.drained.wait()
    assert not waiting.done(), "the waiter took the session from a holder about to take it back"

    bucket.steal(SESSION_ID)  # the holder, looking at the log after letting go, takes it back
    bucket.release(SESSION_ID, released_through=7)
    async with asyncio.timeout(5):
        assert await waiting == Released("served")


async def test_a_waiter_whose_watch_starts_after_a_release_past_its_input_is_served_at_once() -> None:
    bucket = FakeBucket()
    bucket.steal(SESSION_ID)
    bucket.release(SESSION_ID, released_through=9)
    waiting = await await_release(bucket, wake_seq=7)

    async with asyncio.timeout(5):
        assert await waiting == Released("served")


async def test_a_waiter_takes_over_a_lease_not_renewed_for_a_ttl_before_the_server_removes_it() -> None:
    bucket = FakeBucket()
    bucket.steal(SESSION_ID)
    waiting = await await_release(bucket, wake_seq=7, ttl_s=0.3)
    bucket.steal(SESSION_ID)  # one renewal, then its holder dies
    revision = bucket.entries[SESSION_ID][1]

    async with asyncio.timeout(5):
        assert await waiting == Released("free", over=revision, expired=True)


async def test_a_lease_neither_renewed_nor_let_go_for_a_ttl_is_reported_expired_with_its_revision() -> None:
    bucket = FakeBucket()
    bucket.steal("sesn_dead")  # seen when the watch starts
    bucket.steal("sesn_gone")
    manager = Leases(bucket, holder="worker-1", ttl_s=0.3)
    expiries = manager.expiries()
    try:
        async with asyncio.timeout(5):
            first = asyncio.ensure_future(anext(expiries))
            await bucket.watching_all.wait()
            bucket.release("sesn_gone")  # let go: never reported
            dead_revision = bucket.entries["sesn_dead"][1]
            found = await first
            bucket.steal("sesn_released")
            bucket.release("sesn_released")
            bucket.expire_tombstone("sesn_released")  # the delete's tombstone ages out: not an expiry
            bucket.steal("sesn_late")
            bucket.expire("sesn_late")  # the server's mark, before this watch's own deadline
            late = await anext(expiries)
    finally:
        await expiries.aclose()  # type: ignore[attr-defined]

    assert found == Expired("sesn_dead", dead_revision)
    assert late == Expired("sesn_late", None)


async def test_an_expired_lease_is_taken_over_from_exactly_its_revision() -> None:
    bucket = FakeBucket()
    bucket.steal(SESSION_ID)
    stale = bucket.entries[SESSION_ID][1]
    bucket.steal(SESSION_ID)  # renewed meanwhile: the expiry seen was of an older write

    with pytest.raises(LeaseBusy):
        async with leases(bucket, SteppedSleep()).hold(SESSION_ID, over=stale):
            pytest.fail("the block must not run")

    async with leases(bucket, SteppedSleep()).hold(SESSION_ID, over=bucket.entries[SESSION_ID][1]) as lease:
        assert json.loads(bucket.entries[SESSION_ID][0])["token"] == lease.token
