"""A bucket's listings and watches against a real nats-server: none leaves a JetStream consumer behind.

A consumer left on the server outlives the call that made it (nats-py's key-value watches ask the
server to keep one for five minutes after its subscriber goes), so a per-call consumer grows with
sessions x calls: the harness lists the sandbox hosts' bucket for tool calls and watches a session's
lease while it waits for its holder, hundreds of times a minute under the harness-kill soak."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest

from corral.bus import Bus, KeyValueBucket
from corral.contracts.subjects import KeyValueSpec
from corral.settings import NatsSettings
from tests.waiting import eventually

pytestmark = pytest.mark.integration

#: Listings and watches each test makes: each would leave one consumer behind.
CALLS = 20


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with Bus.connect(NatsSettings(url=nats_url), name="kv-consumer-tests") as b:
        yield b


async def _bucket(bus: Bus, name: str) -> KeyValueBucket:
    spec = KeyValueSpec(name=name, owner="session-store", description="test bucket", ttl_s=60.0)
    bucket = await bus.ensure_key_value(spec)
    for key in ("a", "b", "gone"):
        await bucket.put(key, b"v")
    await bucket.delete("gone")
    return bucket


async def _consumers(nats_url: str, stream: str) -> int:
    raw = await nats.connect(nats_url)
    try:
        return (await raw.jetstream().stream_info(stream)).state.consumer_count
    finally:
        await raw.close()


async def test_listing_a_buckets_keys_leaves_no_consumer_behind(nats_url: str, bus: Bus) -> None:
    bucket = await _bucket(bus, "t_kv_listed")
    for _ in range(CALLS):
        assert sorted(await bucket.keys()) == ["a", "b"]  # the deleted key is not listed
    assert await _consumers(nats_url, "KV_t_kv_listed") == 0


async def test_a_closed_watch_leaves_no_consumer_behind(nats_url: str, bus: Bus) -> None:
    bucket = await _bucket(bus, "t_kv_watched")
    for _ in range(CALLS):
        changes = bucket.changes("a")  # first the key's present state: a lease wait's first read
        try:
            async with asyncio.timeout(10):
                change = await anext(changes)
        finally:
            await changes.aclose()
        assert (change.key, change.kind) == ("a", "put")

    async def none_left() -> bool:
        return await _consumers(nats_url, "KV_t_kv_watched") == 0

    await eventually(none_left, timeout=30, every=0.5)  # the server's own sweep, seconds after the watch
