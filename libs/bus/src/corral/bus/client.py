"""``Bus``: publish, fenced appends, reads of a subject's history, live follows, request-reply, KV.

Records on streams may be of any size: one larger than the chunk size is stored in parts and read
back whole (the format and its crash rules are in ``corral.bus.records``).

Every message published through here carries the current trace context in its headers; records
are stored under a ``PRODUCER`` span (``corral.bus.publishing``). A task cancelled while it waits for
a reply, an ack or a fetch is never handed the result instead (see ``corral.bus.cancellation``).

``Bus`` is the only way in: its NATS connection and JetStream context are private, and the modules
beside this one do its work (``connecting``, ``streams``, ``publishing``, ``reading``, ``bodies``,
``serving``, ``messages``, ``calling``, ``objects``, ``producing``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import TypeVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import BaseModel

from corral.bus import buckets, objects, reading, records, streams
from corral.bus.bodies import Bodies, fits
from corral.bus.calling import read_reply
from corral.bus.cancellation import honouring_cancel
from corral.bus.connecting import drain, inbox_prefix, open_connection
from corral.bus.errors import NoResponders, PayloadTooLarge
from corral.bus.kv import KeyValueBucket
from corral.bus.messages import Delivery, OpenConsumers, PubAck, PullConsumer
from corral.bus.mirrors import Mirrors
from corral.bus.objects import ObjectBucket
from corral.bus.publishing import OutgoingRecord, RecordWriter
from corral.bus.reading import Reading
from corral.bus.records import StoredMessage
from corral.bus.serving import Handler, error_reply, serve
from corral.contracts.operation import Operation
from corral.contracts.subjects import ConsumerSpec, KeyValueSpec, ObjectBucketSpec, StreamSpec
from corral.settings import NatsSettings
from corral.telemetry import inject

__all__ = ["Bus", "Delivery", "Handler", "PubAck", "PullConsumer", "Reading", "error_reply", "inbox_prefix"]

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep")


class Bus:
    """A NATS connection with JetStream. Build it with ``Bus.connect``."""

    def __init__(self, nc: Client, settings: NatsSettings) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=settings.request_timeout_s)
        self._settings = settings
        self._bodies = Bodies(self._js)
        self._consumers = OpenConsumers()

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, settings: NatsSettings, *, name: str) -> AsyncIterator[Bus]:
        """Connect (retrying while the server is unreachable), and drain the connection on exit.

        With ``settings.user`` set, the connection logs in as that user and its replies arrive on
        ``_INBOX.<user>.>``, so a user's permissions can confine it to its own replies.

        Raises:
            NotAuthorized: the server refused the credentials (or their absence); retrying would not help.
        """
        nc = await open_connection(settings, name=name)
        bus = cls(nc, settings)
        try:
            yield bus
        finally:
            await bus._consumers.close_all()  # before the drain, which would wait on them
            await drain(nc, name=name)

    @property
    def connected(self) -> bool:
        """Whether the connection to NATS is up now (it reconnects on its own when it is not)."""
        return bool(self._nc.is_connected)

    @property
    def max_payload(self) -> int:
        """The largest message (payload, in bytes) the connected server carries: its ``max_payload``."""
        return int(self._nc.max_payload)

    @property
    def last_error(self) -> Exception | None:
        """The last error the server reported on this connection, such as a permissions violation
        (``Permissions Violation for Publish to "..."``); ``None`` before any."""
        error = self._nc.last_error
        return error if isinstance(error, Exception) else None

    def _check_size(self, data: bytes) -> None:
        if len(data) > self.max_payload:
            raise PayloadTooLarge(len(data), self.max_payload)

    # --- streams -------------------------------------------------------------------------------------
    async def ensure_stream(self, spec: StreamSpec) -> None:
        """Create the stream if missing, with ``CORRAL_NATS_REPLICAS`` copies; refuse
        (``StreamMismatch``) one configured otherwise (its replicas included)."""
        await streams.ensure_stream(self._js, spec, replicas=self._settings.replicas)

    async def ensure_consumer(self, spec: ConsumerSpec) -> None:
        """Create the durable consumer if missing; refuse (``StreamMismatch``) one configured otherwise.

        Its stream must exist. Called by the stream's owner, so the consumer's reader needs no right
        to create consumers on the stream (see ``bind``).
        """
        await streams.ensure_consumer(self._js, spec)

    async def bind(self, spec: ConsumerSpec) -> PullConsumer | None:
        """Read from a durable pull consumer its stream's owner created (``ensure_consumer``), or
        ``None`` while it does not exist yet. Needs only the rights to look the consumer up, fetch
        from it and acknowledge on it."""
        if not await streams.consumer_exists(self._js, spec):
            return None
        sub = await self._js.pull_subscribe_bind(durable=spec.name, stream=spec.stream)
        return self._consumers.track(sub)

    async def stream_spec(self, stream: str) -> StreamSpec:
        """The stream's configuration as the server holds it (storage, retention, protections...)."""
        return await streams.stream_spec(self._js, stream)

    async def stream_last_seq(self, stream: str) -> int:
        """The sequence of the last message on the whole stream (any subject); 0 when it holds none."""
        return await streams.stream_last_seq(self._js, stream)

    async def delete_message(self, stream: str, seq: int) -> None:
        """Delete one message. Corral's log streams deny it (``deny_delete``).

        Raises:
            Refused: the stream denies deletes, or this connection's user may not ask.
        """
        await streams.delete_message(self._js, stream, seq)

    async def purge_stream(self, stream: str) -> None:
        """Purge every message of the stream. Corral's log streams deny it (``deny_purge``) but the
        session log, whose subjects ``purge`` empties when a session is deleted.

        Raises:
            Refused: the stream denies purges, or this connection's user may not ask.
        """
        await streams.purge_stream(self._js, stream)

    def mirrors(self) -> Mirrors:
        """The subscribers' account's mirrors of the log streams (``corral.bus.mirrors``)."""
        return Mirrors(self._nc, timeout_s=self._settings.request_timeout_s, replicas=self._settings.replicas)

    async def ensure_key_value(self, spec: KeyValueSpec) -> KeyValueBucket:
        """The bucket's owner (``spec.owner``): create it when missing; refuse (``StreamMismatch``)
        one configured otherwise."""
        kv = await buckets.ensure(self._js, spec, replicas=self._settings.replicas)
        return KeyValueBucket(kv, self._js, spec.name, direct=await buckets.direct(kv))

    async def bind_key_value(self, spec: KeyValueSpec) -> KeyValueBucket | None:
        """Any other user: the bucket, or ``None`` while its owner has not created it (this never
        creates it); refuse (``StreamMismatch``) one configured otherwise."""
        kv = await buckets.bind(self._js, spec, replicas=self._settings.replicas)
        return None if kv is None else KeyValueBucket(kv, self._js, spec.name, direct=await buckets.direct(kv))

    async def object_bucket(self, spec: ObjectBucketSpec) -> ObjectBucket:
        """Bind to (or create, with ``CORRAL_NATS_REPLICAS`` copies) the object store ``spec``
        describes; refuse (``StreamMismatch``) one with other replicas."""
        return ObjectBucket(await objects.open_store(self._js, spec, replicas=self._settings.replicas))

    # --- publishing ----------------------------------------------------------------------------------
    @property
    def chunk_size(self) -> int:
        """The largest record stored as one message; larger ones are stored in parts of this size."""
        room = self.max_payload - records.HEADER_ROOM
        wanted = self._settings.record_chunk_bytes
        return max(1024, min(wanted, room) if wanted else room)

    @property
    def _writer(self) -> RecordWriter:
        size, timeout = self.chunk_size, self._settings.request_timeout_s
        return RecordWriter(self._js, chunk_size=size, max_payload=self.max_payload, nc=self._nc, timeout=timeout)

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        expected_last_subject_seq: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> PubAck:
        """Store the record ``data`` (of any size) on a stream subject and wait for the ack.

        A record larger than ``chunk_size`` is stored in parts (see ``corral.bus.records``); the ack
        is then the last part's, ``duplicate`` when every part was stored before.

        Raises:
            WrongLastSequence: ``expected_last_subject_seq`` was given and the subject moved on.
        """
        record = OutgoingRecord(data, headers or {}, msg_id)
        return await self._writer.publish_traced(subject, record, fence=expected_last_subject_seq)

    async def publish_batch(
        self,
        subject: str,
        batch: Sequence[OutgoingRecord],
        *,
        expected_last_subject_seq: int | None = None,
        atomic: bool = True,
    ) -> list[PubAck]:
        """Store ``batch``'s records (each of any size) in order on ``subject``, fenced once on
        ``expected_last_subject_seq`` (``WrongLastSequence``: nothing stored); one ack per record.
        ``atomic``: all or none, in one JetStream atomic batch (``RecordWriter.publish_batch``); else
        one at a time, each fenced on the one before (``RecordWriter.publish_each``), for writers with
        no use for all-or-none: a one-replica stream in files stages each batch in a store of its own."""
        return await self._writer.publish_traced_batch(subject, batch, fence=expected_last_subject_seq, atomic=atomic)

    async def publish_raw(self, subject: str, data: bytes, *, headers: dict[str, str]) -> PubAck:
        """Store one message exactly as given: no trace context, no parts, no fence but the headers'
        (for tests and tools writing ``corral.bus.records``' parts themselves; services ``publish``)."""
        self._check_size(data)
        ack = await honouring_cancel(self._js.publish(subject, data, headers=headers))
        return PubAck(seq=ack.seq, duplicate=bool(ack.duplicate))

    async def publish_core(self, subject: str, data: bytes, *, headers: dict[str, str] | None = None) -> None:
        """Fire-and-forget core NATS publish (nothing is stored); ``PayloadTooLarge`` (nothing sent)
        when ``data`` is larger than the server carries."""
        self._check_size(data)
        await self._nc.publish(subject, data, headers=inject(dict(headers or {})))

    # --- reading -------------------------------------------------------------------------------------
    async def last_seq(self, stream: str, subject: str) -> int:
        """Stream sequence of the last message on ``subject``; 0 when it has none.

        This counts raw messages: it may be a part of a record being written or abandoned (see
        ``corral.bus.records``), which is what a fenced append must expect."""
        return await reading.last_seq(self._js, stream, subject)

    async def last_record_seq(self, stream: str, subject: str) -> int | None:
        """Sequence of the last whole record on ``subject`` (0: none); ``None`` when the subject ends in
        a part of a record whose last part is not stored (being written, or abandoned)."""
        return await reading.last_record_seq(self._js, stream, subject)

    async def get(self, stream: str, seq: int) -> StoredMessage:
        """The record stored at ``seq``; for a part of a record stored in parts, that whole record.

        Raises:
            IncompleteRecord: ``seq`` is a part of a record whose parts are not all stored.
        """
        return await reading.assemble(self._js, stream, await reading.get_raw(self._js, stream, seq))

    def read(self, stream: str, subject: str, *, after_seq: int = 0) -> Reading:
        """The records on ``subject`` (a wildcard is fine) after ``after_seq``, up to the last message
        stored when the iteration starts; iterate it with ``async for``. Afterwards its ``tail_seq``
        is the raw last sequence it covered: fence the next append on that."""
        return Reading(self._js, stream, subject, after_seq)

    async def follow(self, stream: str, subject: str, *, after_seq: int | None = None) -> AsyncIterator[StoredMessage]:
        """Live records on ``subject`` in order (an ordered consumer), until the caller stops. A record
        stored in parts is yielded once, whole, when its last part arrives.

        ``after_seq=None`` starts with messages stored from now on; an int replays from after it (a
        record with a part after ``after_seq`` is yielded whole, even when earlier parts are not).
        """
        async with contextlib.aclosing(self.follow_positions(stream, subject, after_seq=after_seq)) as read:
            async for item in read:
                if not isinstance(item, int):
                    yield item

    async def follow_positions(
        self, stream: str, subject: str, *, after_seq: int | None = None
    ) -> AsyncGenerator[StoredMessage | int, None]:
        """``follow``, also telling where the read is: each message that completes no record (a part
        of one still being written, or abandoned by a crashed writer) yields its raw sequence, so a
        reader waiting for "everything up to the subject's last message" is not kept waiting by a
        part that may never be completed."""
        async with contextlib.aclosing(reading.follow_records(self._js, stream, subject, after_seq=after_seq)) as read:
            async for item in read:
                yield item

    async def subscribe_core(self, subject: str) -> AsyncIterator[tuple[bytes, dict[str, str]]]:
        """Live core NATS messages on ``subject`` until the caller stops."""
        sub = await self._nc.subscribe(subject)
        try:
            async for msg in sub.messages:
                yield msg.data, dict(msg.headers or {})
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    @contextlib.asynccontextmanager
    async def listen(self, subject: str, callback: Callable[[bytes], None]) -> AsyncIterator[None]:
        """Call ``callback`` with each core NATS message on ``subject`` while the block runs; the block
        starts once the server routes ``subject`` here, so nothing published after entering is missed."""

        async def on_message(msg: Msg) -> None:
            callback(msg.data)

        sub = await self._nc.subscribe(subject, cb=on_message)
        try:
            await self.flush()
            yield
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def purge(self, stream: str, subject: str, *, keep: int = 0) -> None:
        await self._js.purge_stream(stream, subject=subject, keep=keep or None)

    async def durable(
        self,
        stream: str,
        name: str,
        *,
        filter_subject: str,
        ack_wait_s: float,
        max_deliver: int = -1,
    ) -> PullConsumer:
        """A durable pull consumer shared by every process that binds to ``name``."""
        sub = await streams.pull_durable(
            self._js, stream, name, filter_subject=filter_subject, ack_wait_s=ack_wait_s, max_deliver=max_deliver
        )
        return self._consumers.track(sub)

    # --- request-reply -------------------------------------------------------------------------------
    async def request(self, subject: str, data: bytes, *, timeout: float | None = None, spill: bool = True) -> bytes:
        """Send a request (of any size) and wait for the reply.

        A request or reply larger than one message travels through the bodies object store
        (``corral_bodies``); the message carries its name in ``Corral-Body-Ref``. With
        ``spill=False`` (a request carrying a secret) a request larger than one message is refused
        instead, and nothing is stored.

        Raises:
            NoResponders: nothing serves ``subject`` (the service is not running).
            PayloadTooLarge: ``spill=False`` and the request does not fit one message.
        """
        headers = inject({})
        if not fits(data, self.max_payload):
            if not spill:
                raise PayloadTooLarge(len(data), self.max_payload - records.HEADER_ROOM)
            headers.update(await self._bodies.spill(data))
            data = b""
        try:
            msg = await honouring_cancel(
                self._nc.request(subject, data, timeout=timeout or self._settings.request_timeout_s, headers=headers)
            )
        except nats.errors.NoRespondersError as exc:
            raise NoResponders(subject) from exc
        return await self._bodies.unspill(msg.data, dict(msg.headers or {}))

    async def call(self, op: Operation[Req, Rep], request: Req, *, timeout: float | None = None) -> Rep:
        """Ask ``op`` (its descriptor gives the subject and the shapes) and return its reply's result.

        Raises:
            NoResponders: nothing serves the operation (its service is not running).
            TimeoutError: no reply within ``timeout`` (the request may or may not have been applied).
            ApiError: the service answered with an error reply (its type, message and ``error_code``).
            UnreadableReply: the reply is not the operation's reply shape.
        """
        data = request.model_dump_json().encode()
        raw = await self.request(op.subject, data, timeout=timeout, spill=not op.secret)
        return read_reply(op, raw)

    @contextlib.asynccontextmanager
    async def serve(
        self,
        subject: str,
        handler: Handler,
        *,
        queue: str,
        limit: int = 256,
        too_large: Callable[[int, int], bytes] | None = None,
        large_replies: bool = False,
    ) -> AsyncIterator[None]:
        """Answer requests on ``subject`` while the block runs: every request is answered at once,
        failures and replies too large included (the rules are ``corral.bus.serving.serve``'s)."""
        async with serve(
            self._nc,
            self._bodies,
            self.max_payload,
            self.flush,
            subject,
            handler,
            queue=queue,
            limit=limit,
            too_large=too_large,
            large_replies=large_replies,
        ):
            yield

    async def flush(self) -> None:
        """Return once the server has processed every command this connection sent so far.

        nats-py's own ``flush()`` writes its PING straight to the socket, past commands still in its
        buffer, so its PONG alone says nothing about a SUB made a moment ago: the buffer goes first.
        """
        await self._nc._flush_pending(force_flush=True)  # noqa: SLF001 (see above)
        await self._nc.flush()
