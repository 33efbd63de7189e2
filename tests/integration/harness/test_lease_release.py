"""The harness's lease release against a real nats-server: what a waiter reads of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from corral.bus import Bus
from corral.contracts.subjects import lease_spec
from corral.harness.lease import LeaseBusy, Leases, Released
from corral.settings import NatsSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with Bus.connect(NatsSettings(url=nats_url), name="lease-tests") as b:
        yield b


async def test_a_waiter_whose_watch_starts_after_the_release_reads_how_far_the_holder_got(bus: Bus) -> None:
    # A waiter's ``create`` fails while the holder holds the lease; the holder lets go before the
    # waiter's watch starts. The watch must still read how far the holder got, or the waiter takes
    # the session from a holder about to take it back (or that served its input already).
    bucket = await bus.ensure_key_value(lease_spec(30.0))
    holder = Leases(bucket, holder="harness-1", ttl_s=30.0)
    waiter = Leases(bucket, holder="harness-2", ttl_s=30.0)
    async with holder.hold("sesn_late_watch") as lease:
        with pytest.raises(LeaseBusy):
            async with waiter.hold("sesn_late_watch"):
                pytest.fail("the waiter took a held lease")
        lease.settled_through = 7
    assert await bucket.get("sesn_late_watch") is None, "a release leaves the key without a value"

    async with asyncio.timeout(10):
        released = await waiter.await_release("sesn_late_watch", wake_seq=7, timeout_s=5)
    assert released == Released("served")
    async with waiter.hold("sesn_late_watch"):  # and the key can be taken again
        pass
