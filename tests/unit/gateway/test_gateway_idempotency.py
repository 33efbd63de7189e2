"""Idempotency-Key with a dict-backed bucket: replay, conflicts, release on failure, stale claims."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import httpx
from gateway_fakes import API_KEY, FakeFeed, FakeProbe, FakeStore, agent, settings

from corral.bus import Entry, KeyChanged, KeyExists, StreamUnavailable
from corral.contracts.api.errors import ApiError
from corral.contracts.idempotency import IdempotencyRecord
from corral.contracts.rpc import Op, StoreOps
from corral.gateway.app import create_app
from corral.gateway.idempotency import request_fingerprint
from corral.gateway.state import Backends


class DictBucket:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.revision = 0
        #: Set whenever a request reads a slot (a duplicate reads the first one's pending claim).
        self.read = asyncio.Event()

    async def get(self, key: str) -> Entry | None:
        self.read.set()
        return self.entries.get(key)

    async def create(self, key: str, value: bytes) -> int:
        if key in self.entries:
            raise KeyExists(key)
        return self._write(key, value)

    async def update(self, key: str, value: bytes, *, last: int) -> int:
        if key not in self.entries or self.entries[key].revision != last:
            raise KeyChanged(key)
        return self._write(key, value)

    async def delete(self, key: str, *, last: int | None = None) -> None:
        if last is not None and (key not in self.entries or self.entries[key].revision != last):
            raise KeyChanged(key)
        self.entries.pop(key, None)

    def _write(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.entries[key] = Entry(value, self.revision)
        return self.revision


def client(store: FakeStore, bucket: DictBucket) -> httpx.AsyncClient:
    backends = Backends(store=store, feed=FakeFeed(), probe=FakeProbe(), replies=bucket)
    app = create_app(settings(), backends=backends)
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test", headers={"x-api-key": API_KEY})


BODY: dict[str, Any] = {"name": "a", "model": "claude-sonnet-4-6"}


async def test_a_failed_request_releases_its_key_so_a_retry_runs_again() -> None:
    bucket = DictBucket()
    store = FakeStore(replies={Op.AGENTS_CREATE: ApiError("overloaded_error", "retry")})
    async with client(store, bucket) as http:
        first = await http.post("/v1/agents", json=BODY, headers={"idempotency-key": "k"})
        assert first.status_code == 529 and bucket.entries == {}
        store.replies[Op.AGENTS_CREATE] = agent()
        second = await http.post("/v1/agents", json=BODY, headers={"idempotency-key": "k"})
        third = await http.post("/v1/agents", json=BODY, headers={"idempotency-key": "k"})
    assert second.status_code == 200 and third.content == second.content
    assert third.headers["idempotent-replayed"] == "true"
    assert store.ops().count(Op.AGENTS_CREATE) == 2


async def test_a_duplicate_waits_for_the_first_and_a_stale_claim_is_taken_over() -> None:
    bucket = DictBucket()
    release = asyncio.Event()
    started = asyncio.Event()

    class SlowStore(FakeStore):
        async def call(self, op: Any, request: Any) -> Any:
            if op is StoreOps.AGENTS_CREATE:
                started.set()
                await release.wait()
                return agent()
            return await super().call(op, request)

    store = SlowStore()
    async with client(store, bucket) as http:
        first = asyncio.ensure_future(http.post("/v1/agents", json=BODY, headers={"idempotency-key": "k"}))
        async with asyncio.timeout(5):
            await started.wait()
        bucket.read.clear()
        second = asyncio.ensure_future(http.post("/v1/agents", json=BODY, headers={"idempotency-key": "k"}))
        async with asyncio.timeout(5):
            await bucket.read.wait()  # the duplicate has found the first one's pending claim
        assert not second.done()
        release.set()
        a, b = await first, await second
    assert a.status_code == b.status_code == 200 and a.content == b.content

    (slot,) = bucket.entries
    stale = IdempotencyRecord(state="pending", fingerprint="f", claimed_at=time.time() - 3600)
    bucket.entries[slot] = Entry(stale.model_dump_json().encode(), 99)
    async with client(FakeStore(replies={Op.AGENTS_CREATE: agent()}), bucket) as http:
        other_body = await http.post("/v1/agents", json=BODY, headers={"idempotency-key": "k"})
    assert other_body.status_code == 409  # the stale claim was for another request: still a conflict


async def test_the_stored_fingerprint_is_keyed_with_the_api_key_not_a_plain_hash_of_the_body() -> None:
    # A body may carry a secret (a credential's token); the bucket is a JetStream stream. A plain
    # hash of a short secret could be reversed by guessing, an HMAC keyed with the caller's API key
    # (kept by Corral only as a hash) cannot.
    bucket = DictBucket()
    store = FakeStore(replies={Op.AGENTS_CREATE: agent()})
    async with client(store, bucket) as http:
        sent = await http.post("/v1/agents", json=BODY, headers={"idempotency-key": "k"})
    assert sent.status_code == 200
    (entry,) = bucket.entries.values()
    stored = IdempotencyRecord.model_validate_json(entry.value).fingerprint
    body = sent.request.content
    assert stored == request_fingerprint(API_KEY, "/v1/agents", body)
    assert stored != hashlib.sha256(b"\0".join([b"POST", b"/v1/agents", body])).hexdigest()
    assert stored != request_fingerprint(API_KEY + "x", "/v1/agents", body)


class LeaderlessBucket(DictBucket):
    """The bucket while its stream has no leader (a NATS cluster failover): no write is answered."""

    async def create(self, key: str, value: bytes) -> int:
        raise StreamUnavailable("KV_corral_idempotency")


async def test_a_claim_no_server_answers_is_a_503_to_retry_not_a_500() -> None:
    store = FakeStore(replies={Op.AGENTS_CREATE: agent()})
    async with client(store, LeaderlessBucket()) as http:
        response = await http.post("/v1/agents", json=BODY, headers={"idempotency-key": "k"})
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2" and response.headers["x-should-retry"] == "true"
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    assert "retry in 2 seconds with the same Idempotency-Key" in body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"]
    assert store.ops().count(Op.AGENTS_CREATE) == 0  # the request did not run without its claim
