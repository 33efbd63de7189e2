"""corral.bus against a real nats-server: stream configuration checks, fencing, dedupe, leases."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from corral.bus import (
    Bus,
    KeyChanged,
    KeyExists,
    KeyValueBucket,
    Refused,
    StreamMismatch,
    StreamUnavailable,
    WrongLastSequence,
)
from corral.contracts.subjects import SANDBOX_RELEASES_SPEC, SESSIONS_SPEC, KeyValueSpec, StreamSpec
from corral.settings import NatsSettings
from tests.waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with Bus.connect(NatsSettings(url=nats_url), name="bus-tests") as b:
        yield b


async def test_a_missing_stream_is_created_as_declared(bus: Bus) -> None:
    spec = SESSIONS_SPEC.model_copy(update={"name": "T_CREATED", "subjects": ("t.created.*",)})
    await bus.ensure_stream(spec)
    await bus.ensure_stream(spec)  # and accepted as is the next time
    found = await bus.stream_spec("T_CREATED")
    assert (found.storage, found.retention, found.duplicate_window_s) == ("file", "limits", 120.0)


async def test_a_stream_made_without_the_delete_protections_gets_them(bus: Bus) -> None:
    spec = StreamSpec(
        name="T_PROTECTED", subjects=("t.protected.*",), retention="limits", storage="file", duplicate_window_s=120.0
    )
    await bus.ensure_stream(spec.model_copy(update={"deny_delete": False, "deny_purge": False}))
    assert (await bus.stream_spec("T_PROTECTED")).deny_delete is not True
    await bus.ensure_stream(spec)
    config = await bus.stream_spec("T_PROTECTED")
    assert (config.deny_delete, config.deny_purge) == (True, True)
    ack = await bus.publish("t.protected.a", b"kept")
    with pytest.raises(Refused, match="T_PROTECTED"):
        await bus.delete_message("T_PROTECTED", ack.seq)
    with pytest.raises(Refused, match="T_PROTECTED"):
        await bus.purge_stream("T_PROTECTED")
    assert await bus.last_seq("T_PROTECTED", "t.protected.a") == ack.seq


async def test_a_stream_that_allows_purges_the_spec_denies_is_not_loosened_silently(bus: Bus) -> None:
    spec = StreamSpec(
        name="T_LOOSE", subjects=("t.loose.*",), retention="limits", storage="file", duplicate_window_s=120.0
    )
    await bus.ensure_stream(spec)  # deny_purge on
    with pytest.raises(StreamMismatch, match="deny_purge"):
        await bus.ensure_stream(spec.model_copy(update={"deny_purge": False}))


@pytest.mark.parametrize(
    ("field", "value"),
    [("storage", "memory"), ("retention", "workqueue"), ("duplicate_window_s", 5.0)],
)
async def test_a_stream_configured_otherwise_is_refused_with_the_difference_named(
    bus: Bus, field: str, value: object
) -> None:
    name = f"T_MISMATCH_{field.upper()}"
    wrong = StreamSpec(
        name=name, subjects=(f"t.{field}.*",), retention="limits", storage="file", duplicate_window_s=120.0
    )
    await bus.ensure_stream(wrong.model_copy(update={field: value}))
    with pytest.raises(StreamMismatch) as err:
        await bus.ensure_stream(wrong)
    assert field in str(err.value) and name in str(err.value)


async def test_a_consumer_made_by_the_owner_is_read_headers_only_and_resumes_after_a_rebind(bus: Bus) -> None:
    stream = SESSIONS_SPEC.model_copy(update={"name": "T_CONSUMER", "subjects": ("t.consumer.*",)})
    spec = SANDBOX_RELEASES_SPEC.model_copy(update={"stream": "T_CONSUMER", "filter_subject": "t.consumer.*"})
    await bus.ensure_stream(stream)
    await bus.publish("t.consumer.a", b"before the consumer")  # deliver_policy new: never delivered
    assert await bus.bind(spec) is None  # not made yet
    await bus.ensure_consumer(spec)
    await bus.ensure_consumer(spec)  # again, at the next start-up: unchanged
    await bus.publish("t.consumer.a", b"x" * 5000, headers={"Corral-Record-Type": "user.message"})
    await bus.publish("t.consumer.b", b"{}", headers={"Corral-Record-Type": "corral.session_deleted"})
    consumer = await bus.bind(spec)
    assert consumer is not None
    [first] = await consumer.fetch(1, timeout=2)
    assert first.data == b"" and first.headers["Corral-Record-Type"] == "user.message"
    assert first.headers["Nats-Msg-Size"] == "5000"
    await first.ack()
    await bus.flush()
    await consumer.close()
    again = await bus.bind(spec)  # a restarted reader goes on after the last acknowledgement
    assert again is not None
    [second] = await again.fetch(5, timeout=2)
    assert second.subject == "t.consumer.b" and second.headers["Corral-Record-Type"] == "corral.session_deleted"
    await again.close()


async def test_a_connection_with_a_consumer_whose_fetch_was_cancelled_closes_at_once(bus: Bus, nats_url: str) -> None:
    """A service stopping cancels its consumer's fetch; a record the server then hands to the
    abandoned pull request sits in the subscription's queue, never marked done. Draining the
    connection waited on it for nats-py's whole drain timeout (30 s); the bus unsubscribes its pull
    consumers first, so the connection closes at once (and the record is redelivered later)."""
    stream = SESSIONS_SPEC.model_copy(update={"name": "T_CANCELLED_FETCH", "subjects": ("t.cfetch.*",)})
    spec = SANDBOX_RELEASES_SPEC.model_copy(update={"stream": "T_CANCELLED_FETCH", "filter_subject": "t.cfetch.*"})
    await bus.ensure_stream(stream)
    await bus.ensure_consumer(spec)
    js = bus._js  # noqa: SLF001 - the server's view of the consumer: waiting pulls, unacknowledged records
    async with Bus.connect(NatsSettings(url=nats_url), name="stopping") as stopping:
        consumer = await stopping.bind(spec)
        assert consumer is not None
        fetching = asyncio.create_task(consumer.fetch(1, timeout=30))

        async def pull_waiting() -> bool:
            return (await js.consumer_info(spec.stream, spec.name)).num_waiting > 0

        await eventually(pull_waiting, timeout=10)
        fetching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fetching
        await bus.publish("t.cfetch.a", b"{}", headers={"Corral-Record-Type": "corral.session_deleted"})

        async def handed_out() -> bool:
            return (await js.consumer_info(spec.stream, spec.name)).num_ack_pending == 1

        await eventually(handed_out, timeout=10)
        closing = time.monotonic()
    assert time.monotonic() - closing < 3.0


async def test_a_consumer_configured_otherwise_is_refused_with_the_difference_named(bus: Bus) -> None:
    stream = SESSIONS_SPEC.model_copy(update={"name": "T_CONSUMER_MISMATCH", "subjects": ("t.cmismatch.*",)})
    spec = SANDBOX_RELEASES_SPEC.model_copy(update={"stream": "T_CONSUMER_MISMATCH", "filter_subject": "t.cmismatch.*"})
    await bus.ensure_stream(stream)
    await bus.ensure_consumer(spec.model_copy(update={"headers_only": False}))
    with pytest.raises(StreamMismatch) as err:
        await bus.ensure_consumer(spec)
    assert "headers_only" in str(err.value) and spec.name in str(err.value)


async def test_a_fenced_publish_with_a_stale_sequence_is_rejected(bus: Bus) -> None:
    spec = SESSIONS_SPEC.model_copy(update={"name": "T_FENCE", "subjects": ("t.fence.*",)})
    await bus.ensure_stream(spec)
    first = await bus.publish("t.fence.a", b"1", expected_last_subject_seq=0)
    await bus.publish("t.fence.a", b"2", expected_last_subject_seq=first.seq)
    with pytest.raises(WrongLastSequence):
        await bus.publish("t.fence.a", b"3", expected_last_subject_seq=first.seq)
    assert [m.data async for m in bus.read("T_FENCE", "t.fence.a")] == [b"1", b"2"]


async def test_a_republished_message_id_is_stored_once(bus: Bus) -> None:
    spec = SESSIONS_SPEC.model_copy(update={"name": "T_DEDUPE", "subjects": ("t.dedupe.*",)})
    await bus.ensure_stream(spec)
    one = await bus.publish("t.dedupe.a", b"x", msg_id="same")
    two = await bus.publish("t.dedupe.a", b"x", msg_id="same")
    assert two.duplicate and two.seq == one.seq
    assert await bus.last_seq("T_DEDUPE", "t.dedupe.a") == one.seq


async def test_a_lease_is_taken_once_and_renewed_only_by_its_revision(bus: Bus) -> None:
    leases = await bus.ensure_key_value(_kv_spec("t_leases", 30.0))
    revision = await leases.create("sesn_x", b"a")
    with pytest.raises(KeyExists):
        await leases.create("sesn_x", b"b")
    renewed = await leases.update("sesn_x", b"a", last=revision)
    with pytest.raises(KeyChanged):
        await leases.update("sesn_x", b"b", last=revision)
    await leases.delete("sesn_x", last=renewed)
    assert await leases.get("sesn_x") is None
    assert await leases.create("sesn_x", b"c") > renewed


async def test_a_served_subject_is_answered_from_another_connection_as_soon_as_the_block_runs(
    nats_url: str, bus: Bus
) -> None:
    async def echo(data: bytes, _headers: dict[str, str]) -> bytes:
        return data

    async with Bus.connect(NatsSettings(url=nats_url), name="bus-tests-server") as server:
        for n in range(50):
            async with server.serve(f"t.served.{n}", echo, queue="t"):
                assert await bus.request(f"t.served.{n}", b"%d" % n, timeout=5) == b"%d" % n


async def test_the_last_sequence_of_a_stream_spans_every_subject(bus: Bus) -> None:
    spec = SESSIONS_SPEC.model_copy(update={"name": "T_LAST", "subjects": ("t.last.*",)})
    await bus.ensure_stream(spec)
    assert await bus.stream_last_seq("T_LAST") == 0
    await bus.publish("t.last.a", b"one")
    second = await bus.publish("t.last.b", b"two")
    assert await bus.stream_last_seq("T_LAST") == second.seq
    assert await bus.last_seq("T_LAST", "t.last.a") < second.seq


def _kv_spec(name: str, ttl_s: float) -> KeyValueSpec:
    return KeyValueSpec(name=name, owner="session-store", description="test bucket", ttl_s=ttl_s)


async def test_a_key_value_bucket_is_created_by_its_owner_as_declared_and_bound_by_readers(
    nats_url: str, bus: Bus
) -> None:
    spec = _kv_spec("t_kv_declared", 30.0)
    raw = await nats.connect(nats_url)
    try:
        assert await bus.bind_key_value(spec) is None  # a reader before the owner creates nothing
        with pytest.raises(BucketNotFoundError):
            await raw.jetstream().key_value("t_kv_declared")
        status = await _created_by_owner(bus, raw, spec)
    finally:
        await raw.close()
    assert (status.ttl, status.history, status.stream_info.config.storage) == (30.0, 1, StorageType.FILE)


async def _created_by_owner(bus: Bus, raw: Client, spec: KeyValueSpec) -> KeyValue.BucketStatus:
    owned = await bus.ensure_key_value(spec)
    await owned.create("k", b"v")
    assert await bus.ensure_key_value(spec) is not None  # accepted as is the next time
    reader = await bus.bind_key_value(spec)
    assert reader is not None
    entry = await reader.get("k")
    assert entry is not None and entry.value == b"v"
    return await (await raw.jetstream().key_value(spec.name)).status()


async def test_a_write_no_stream_answers_is_stream_unavailable_not_a_raw_nats_error(nats_url: str, bus: Bus) -> None:
    """What a cluster without a leader looks like to a writer: nobody answers the stream's subject
    (here its stream is gone). Each write raises ``StreamUnavailable``, which the gateway answers with
    a 503 and a retry hint, not nats-py's ``NoStreamResponseError`` (a 500)."""
    bucket = await bus.ensure_key_value(_kv_spec("t_kv_leaderless", 30.0))
    revision = await bucket.create("k", b"v")
    raw = await nats.connect(nats_url)
    try:
        await raw.jetstream().delete_stream("KV_t_kv_leaderless")
    finally:
        await raw.close()
    writes: list[Callable[[], Awaitable[object]]] = [
        lambda: bucket.create("other", b"v"),
        lambda: bucket.put("k", b"v2"),
        lambda: bucket.update("k", b"v3", last=revision),
        lambda: bucket.delete("k", last=revision),
    ]
    for write in writes:
        with pytest.raises(StreamUnavailable, match="KV_t_kv_leaderless"):
            await write()


async def test_a_key_value_bucket_configured_otherwise_is_refused_with_the_difference(bus: Bus) -> None:
    await bus.ensure_key_value(_kv_spec("t_kv_drift", 30.0))
    with pytest.raises(StreamMismatch, match=r"t_kv_drift .*ttl_s is 30\.0, expected 10\.0.*session-store"):
        await bus.bind_key_value(_kv_spec("t_kv_drift", 10.0))
    with pytest.raises(StreamMismatch, match=r"ttl_s is 30\.0, expected 10\.0.*nats kv rm t_kv_drift"):
        await bus.ensure_key_value(_kv_spec("t_kv_drift", 10.0))
    with pytest.raises(StreamMismatch, match=r"history is 1, expected 5"):
        await bus.bind_key_value(_kv_spec("t_kv_drift", 30.0).model_copy(update={"history": 5}))


async def test_an_expired_entry_of_a_bucket_with_expiry_marks_is_seen_going_and_can_be_created_again(
    bus: Bus,
) -> None:
    spec = _kv_spec("t_kv_marks", 1.0).model_copy(update={"expiry_marks": True})
    bucket = await bus.ensure_key_value(spec)
    assert await bus.bind_key_value(spec) is not None
    await bucket.create("lease", b"holder-1")
    changes = bucket.changes(current=False)
    try:
        async with asyncio.timeout(10):  # the TTL is one second: the server's mark comes then
            change = await anext(changes)
    finally:
        await changes.aclose()

    assert (change.key, change.kind) == ("lease", "expired")
    assert await bucket.get("lease") is None, "an expiry mark is not a value"
    revision = await bucket.create("lease", b"holder-2")  # not refused because of the mark
    entry = await bucket.get("lease")
    assert entry is not None and (entry.value, entry.revision) == (b"holder-2", revision)
    with pytest.raises(KeyExists):
        await bucket.create("lease", b"holder-3")


async def test_a_key_created_over_the_callers_own_delete_mark_skips_the_lookup_and_a_wrong_mark_falls_back(
    nats_url: str, bus: Bus
) -> None:
    """A harness takes back the lease of a session it let go with one write (the mark's revision from
    its own ``delete``); a mark that is no longer the key's last message costs a lookup, never a wrong
    answer. The lookups are counted on the wire: a plain subscriber to the bucket stream's get API."""
    bucket = await bus.ensure_key_value(_kv_spec("t_kv_gone_at", 30.0))
    raw = await nats.connect(nats_url)
    looked_up: list[str] = []

    marks: list[int] = []

    async def seen(msg: Msg) -> None:
        looked_up.append(msg.subject)

    async def marked(msg: Msg) -> None:
        marks.append(int(msg.data))

    await raw.subscribe("$JS.API.DIRECT.GET.KV_t_kv_gone_at.>", cb=seen)
    await raw.subscribe("$JS.API.DIRECT.GET.KV_t_kv_gone_at", cb=seen)
    await raw.subscribe("$JS.API.STREAM.MSG.GET.KV_t_kv_gone_at", cb=seen)
    await raw.subscribe("t.gone_at.mark", cb=marked)
    await raw.flush()

    async def lookups() -> int:
        # A mark sent on the bus's own connection after its requests arrives after their copies.
        await bus.publish_core("t.gone_at.mark", str(len(marks) + 1).encode())
        expected = len(marks) + 1

        async def arrived() -> bool:
            return len(marks) >= expected

        await eventually(arrived, timeout=5)
        count = len(looked_up)
        looked_up.clear()
        return count

    try:
        await _created_over_marks(bucket, lookups)
    finally:
        await raw.close()


async def _created_over_marks(bucket: KeyValueBucket, lookups: Callable[[], Awaitable[int]]) -> None:
    first = await bucket.create("lease", b"holder-1")
    mark = await bucket.delete("lease", last=first)
    assert mark > first and await bucket.get("lease") is None
    assert await lookups() == 1  # the get: the wire count sees this bucket's lookups
    again = await bucket.create("lease", b"holder-1 again", gone_at=mark)
    assert await lookups() == 0, "the right mark is taken over with one write"
    entry = await bucket.get("lease")
    assert entry is not None and (entry.value, entry.revision) == (b"holder-1 again", again)
    assert await lookups() == 1

    # the mark is stale: another holder took the key and let it go since
    stale = await bucket.delete("lease", last=again)
    other = await bucket.create("lease", b"holder-2", gone_at=stale)
    await bucket.delete("lease", last=other)
    assert await lookups() == 0
    taken = await bucket.create("lease", b"holder-1", gone_at=stale)
    assert await lookups() == 1
    entry = await bucket.get("lease")
    assert entry is not None and (entry.value, entry.revision) == (b"holder-1", taken)

    # the key has a value: a stale mark never takes it
    with pytest.raises(KeyExists):
        await bucket.create("lease", b"holder-3", gone_at=stale)


async def test_the_owner_turns_expiry_marks_on_in_a_bucket_made_without_them(bus: Bus) -> None:
    plain = _kv_spec("t_kv_marks_later", 30.0)
    await bus.ensure_key_value(plain)
    marked = plain.model_copy(update={"expiry_marks": True})
    # a reader waits for the owner, as for a bucket not made yet (a harness binding the lease bucket
    # between the session-store's create and its turning the marks on refused to start)
    assert await bus.bind_key_value(marked) is None
    await bus.ensure_key_value(marked)
    assert await bus.bind_key_value(marked) is not None


async def test_a_published_record_is_sent_under_a_producer_span_its_headers_carry(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer side continues the producer's span: the record's ``traceparent`` names it."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from corral.bus import producing
    from corral.telemetry import carried_span

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    monkeypatch.setattr(producing, "_tracer", provider.get_tracer("test"))
    await bus.ensure_stream(SESSIONS_SPEC.model_copy(update={"name": "T_TRACED", "subjects": ("t.traced.*",)}))

    with provider.get_tracer("test").start_as_current_span("caller") as caller:
        ack = await bus.publish("t.traced.s1", b"record", msg_id="traced-1")

    [producer] = [s for s in spans.get_finished_spans() if s.name != "caller"]
    assert producer.name == "send t.traced" and producer.kind == trace.SpanKind.PRODUCER
    assert producer.parent is not None and producer.parent.span_id == caller.get_span_context().span_id
    assert dict(producer.attributes or {}) == {
        "messaging.system": "nats",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "t.traced.s1",
        "messaging.message.body.size": 6,
        "messaging.message.id": str(ack.seq),
    }
    stored = await bus.get("T_TRACED", ack.seq)
    carried = carried_span(stored.headers)
    assert carried is not None and producer.context is not None
    assert (carried.trace_id, carried.span_id) == (producer.context.trace_id, producer.context.span_id)
