"""``Bus``: publish, fenced appends, reads of a subject's history, live follows, request-reply, KV.

Records on streams may be of any size: one larger than the chunk size is stored in parts and read
back whole (the format and its crash rules are in ``corral.bus.records``).

Every message published through here carries the current trace context in its headers, and a task
cancelled while it waits for a reply, an ack or a fetch is never handed the result instead (see
``corral.bus.cancellation``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors
from nats.js.object_store import ObjectStore

from corral.bus import records
from corral.bus.cancellation import honouring_cancel
from corral.bus.errors import (
    IncompleteRecord,
    NoResponders,
    NotAuthorized,
    PayloadTooLarge,
    StreamMismatch,
    WrongLastSequence,
)
from corral.bus.kv import KeyValueBucket
from corral.bus.objects import ObjectBucket
from corral.bus.records import StoredMessage
from corral.contracts import headers as h
from corral.contracts import subjects
from corral.contracts.api.errors import ErrorDetail
from corral.contracts.rpc import RpcReply
from corral.contracts.subjects import ObjectBucketSpec, StreamSpec
from corral.settings import NatsSettings
from corral.telemetry import inject

logger = logging.getLogger(__name__)

Handler = Callable[[bytes, dict[str, str]], Awaitable[bytes]]
"""A request handler: request payload and headers in, reply payload out."""

_WRONG_LAST_SEQUENCE = (10071, 10164)


@dataclass(frozen=True)
class PubAck:
    seq: int
    """The stream sequence of the record's last (or only) message."""
    duplicate: bool
    """The record was stored before (every part of it, for a record stored in parts)."""
    first_seq: int | None = None
    """For a record stored in parts, its first part's sequence."""


@dataclass
class Delivery:
    """A message from a durable consumer; it must end in ``ack``, ``nak`` or ``term``."""

    subject: str
    seq: int
    data: bytes
    headers: dict[str, str]
    num_delivered: int
    _msg: Msg = field(repr=False)

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay: float | None = None) -> None:
        await self._msg.nak(delay=delay)

    async def in_progress(self) -> None:
        await self._msg.in_progress()

    async def term(self) -> None:
        await self._msg.term()


class PullConsumer:
    def __init__(self, sub: JetStreamContext.PullSubscription) -> None:
        self._sub = sub

    async def fetch(self, batch: int = 1, *, timeout: float = 5.0) -> list[Delivery]:
        """Up to ``batch`` messages; an empty list when none arrived within ``timeout``."""
        try:
            msgs = await honouring_cancel(self._sub.fetch(batch, timeout=timeout))
        except (TimeoutError, nats.errors.TimeoutError, js_errors.FetchTimeoutError):
            return []
        return [
            Delivery(
                subject=m.subject,
                seq=m.metadata.sequence.stream,
                data=m.data,
                headers=dict(m.headers or {}),
                num_delivered=m.metadata.num_delivered,
                _msg=m,
            )
            for m in msgs
        ]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


def _stored(msg: Msg) -> StoredMessage:
    meta = msg.metadata
    return StoredMessage(
        subject=msg.subject,
        seq=meta.sequence.stream,
        data=msg.data,
        headers=dict(msg.headers or {}),
        time=meta.timestamp,
    )


def inbox_prefix(user: str) -> str:
    """Where replies to ``user``'s requests (and its consumers' deliveries) arrive: ``_INBOX.<user>``."""
    return f"_INBOX.{user}"


def _is_authorization_error(exc: Exception) -> bool:
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower()


def _enum_value(value: object) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


def error_reply(kind: str, message: str) -> bytes:
    """An ``RpcReply`` carrying only an error: what a request gets when its handler could not answer."""
    return RpcReply(ok=False, error=ErrorDetail(type=kind, message=message)).model_dump_json().encode()


class Reading:
    """The records on a subject up to its last message when iterated (see ``Bus.read``)."""

    def __init__(self, bus: Bus, stream: str, subject: str, after_seq: int) -> None:
        self._bus = bus
        self._stream = stream
        self._subject = subject
        self._after_seq = after_seq
        self.tail_seq = after_seq
        """The raw last sequence the read covered (parts of an incomplete record included); set once
        iteration has started."""

    def __aiter__(self) -> AsyncIterator[StoredMessage]:
        return self._records()

    async def _records(self) -> AsyncIterator[StoredMessage]:
        last = await self._bus.last_seq(self._stream, self._subject)
        self.tail_seq = max(self._after_seq, last)
        if last <= self._after_seq:
            return
        reassembler = records.Reassembler(functools.partial(self._bus._parts, self._stream))
        async with contextlib.aclosing(
            self._bus._follow_raw(self._stream, self._subject, after_seq=self._after_seq)
        ) as raw:
            async for msg in raw:
                whole = await reassembler.feed(msg)
                if whole is not None:
                    yield whole
                if msg.seq >= last:
                    return


class Bus:
    """A NATS connection with JetStream. Build it with ``Bus.connect``."""

    def __init__(self, nc: Client, settings: NatsSettings) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=settings.request_timeout_s)
        self._settings = settings
        self._bodies_store: ObjectStore | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, settings: NatsSettings, *, name: str) -> AsyncIterator[Bus]:
        """Connect (retrying while the server is unreachable), and drain the connection on exit.

        With ``settings.user`` set, the connection logs in as that user and its replies arrive on
        ``_INBOX.<user>.>``, so a user's permissions can confine it to its own replies.

        Raises:
            NotAuthorized: the server refused the credentials (or their absence); retrying would not help.
        """
        refused = asyncio.Event()
        refusal: list[str] = []

        async def on_error(exc: Exception) -> None:
            if _is_authorization_error(exc):
                refusal.append(str(exc))
                refused.set()
            else:
                logger.warning("nats: %s", exc, extra={"fields": {"connection": name}})

        credentials: dict[str, str] = {}
        if settings.user:
            credentials = {"user": settings.user, "inbox_prefix": inbox_prefix(settings.user)}
            if settings.password is not None:
                credentials["password"] = settings.password.get_secret_value()
        connecting = asyncio.ensure_future(
            nats.connect(
                settings.url,
                name=name,
                connect_timeout=settings.connect_timeout_s,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                **credentials,
            )
        )
        waiting_refusal = asyncio.ensure_future(refused.wait())
        try:
            await asyncio.wait({connecting, waiting_refusal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting_refusal.cancel()
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(BaseException):
                    await connecting
        if connecting.cancelled():
            who = f"user {settings.user!r}" if settings.user else "a client without credentials"
            raise NotAuthorized(
                f"NATS at {settings.url} refused {who} ({refusal[0] if refusal else 'authorization violation'}); "
                "set CORRAL_NATS_USER and CORRAL_NATS_PASSWORD to this service's NATS credentials "
                "(a dev stack keeps them in .corral/nats-users.json)"
            )
        nc = connecting.result()
        try:
            yield cls(nc, settings)
        finally:
            with contextlib.suppress(Exception):
                await nc.drain()

    @property
    def max_payload(self) -> int:
        """The largest message (payload, in bytes) the connected server carries: its ``max_payload``."""
        return int(self.nc.max_payload)

    def _check_size(self, data: bytes) -> None:
        if len(data) > self.max_payload:
            raise PayloadTooLarge(len(data), self.max_payload)

    # --- streams -------------------------------------------------------------------------------------
    async def ensure_stream(self, spec: StreamSpec) -> None:
        """Create the stream if missing; refuse (``StreamMismatch``) one configured otherwise."""
        try:
            info = await self.js.stream_info(spec.name)
        except js_errors.NotFoundError:
            with contextlib.suppress(js_errors.BadRequestError):  # created concurrently by a sibling
                await self.js.add_stream(
                    name=spec.name,
                    subjects=list(spec.subjects),
                    retention=js_api.RetentionPolicy(spec.retention),
                    storage=js_api.StorageType(spec.storage),
                    duplicate_window=spec.duplicate_window_s,
                    max_msgs_per_subject=spec.max_msgs_per_subject,
                    allow_direct=True,
                    deny_delete=spec.deny_delete,
                    deny_purge=spec.deny_purge,
                )
            info = await self.js.stream_info(spec.name)
        cfg = info.config
        if (spec.deny_delete and not cfg.deny_delete) or (spec.deny_purge and not cfg.deny_purge):
            # a stream made before these protections existed: add them (the server allows that)
            cfg.deny_delete = bool(cfg.deny_delete) or spec.deny_delete
            cfg.deny_purge = bool(cfg.deny_purge) or spec.deny_purge
            info = await self.js.update_stream(cfg)
            cfg = info.config
        found = {
            "storage": _enum_value(cfg.storage),
            "retention": _enum_value(cfg.retention),
            "duplicate_window_s": float(cfg.duplicate_window or 0),
            "subjects": tuple(cfg.subjects or ()),
            "deny_delete": bool(cfg.deny_delete),
            "deny_purge": bool(cfg.deny_purge),
        }
        wanted = {
            "storage": spec.storage,
            "retention": spec.retention,
            "duplicate_window_s": spec.duplicate_window_s,
            "subjects": spec.subjects,
            "deny_delete": spec.deny_delete,
            "deny_purge": spec.deny_purge,
        }
        diff = {k: (found[k], wanted[k]) for k in wanted if found[k] != wanted[k]}
        if diff:
            detail = ", ".join(f"{k} is {v[0]!r}, expected {v[1]!r}" for k, v in diff.items())
            raise StreamMismatch(
                f"stream {spec.name} exists with a different configuration ({detail}); "
                "fix or remove the stream, or point Corral at another NATS server"
            )

    async def key_value(self, bucket: str, *, ttl_s: float) -> KeyValueBucket:
        """Bind to (or create) a KV bucket whose entries expire ``ttl_s`` after their last write."""
        try:
            kv = await self.js.key_value(bucket)
        except js_errors.BucketNotFoundError:
            kv = await self.js.create_key_value(bucket=bucket, ttl=ttl_s, history=1)
        return KeyValueBucket(kv)

    async def object_bucket(self, spec: ObjectBucketSpec) -> ObjectBucket:
        """Bind to (or create) the object store ``spec`` describes."""
        try:
            store = await self.js.object_store(spec.name)
        except js_errors.BucketNotFoundError:
            config = js_api.ObjectStoreConfig(
                bucket=spec.name,
                description=spec.description,
                ttl=spec.ttl_s,
                storage=js_api.StorageType(spec.storage),
            )
            with contextlib.suppress(js_errors.BadRequestError):  # created concurrently by a sibling
                await self.js.create_object_store(spec.name, config=config)
            store = await self.js.object_store(spec.name)
        return ObjectBucket(store)

    # --- publishing ----------------------------------------------------------------------------------
    @property
    def chunk_size(self) -> int:
        """The largest record stored as one message; larger ones are stored in parts of this size."""
        room = self.max_payload - records.HEADER_ROOM
        wanted = self._settings.record_chunk_bytes
        return max(1024, min(wanted, room) if wanted else room)

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
        hdrs = inject(dict(headers or {}))
        if len(data) <= self.chunk_size:
            return await self._publish_one(subject, data, hdrs, msg_id=msg_id, fence=expected_last_subject_seq)
        base = msg_id or uuid.uuid4().hex
        record_id = base
        while True:
            outcome = await self._publish_parts(subject, data, hdrs, record_id, fence=expected_last_subject_seq)
            if isinstance(outcome, PubAck):
                return outcome
            # An earlier attempt under this id stopped mid-record and was abandoned: store it afresh.
            record_id = f"{base}@{outcome}"

    async def _publish_one(
        self, subject: str, data: bytes, hdrs: dict[str, str], *, msg_id: str | None, fence: int | None
    ) -> PubAck:
        hdrs = dict(hdrs)
        if msg_id is not None:
            hdrs[h.MSG_ID] = msg_id
        if fence is not None:
            hdrs[h.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(fence)
        self._check_size(data)
        try:
            ack = await honouring_cancel(self.js.publish(subject, data, headers=hdrs))
        except js_errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise WrongLastSequence(exc.description or "wrong last sequence") from exc
            raise
        return PubAck(seq=ack.seq, duplicate=bool(ack.duplicate))

    async def _publish_parts(
        self, subject: str, data: bytes, hdrs: dict[str, str], record_id: str, *, fence: int | None
    ) -> PubAck | int:
        """Store ``data`` as parts of ``record_id``; or, when an earlier attempt under this id left its
        parts abandoned (something else follows them) or stored other bytes, that attempt's first
        part's sequence (the caller then stores the record under another id)."""
        sha = records.digest(data)
        chunks = records.split(data, self.chunk_size)
        count = len(chunks)
        first = await self._publish_part(
            subject, chunks[0], records.part_headers(hdrs, record_id, 1, count, sha), fence
        )
        if not first.duplicate:
            return await self._publish_rest(subject, chunks, hdrs, record_id, sha, first_seq=first.seq, done=1)
        # The server checks the fence before the id, so this attempt expected the subject's true tail.
        stored = await self._parts(first.stream, subject, first.seq, count + 1)
        info = records.part_info(stored[0].headers) if stored else None
        if info is None:
            return first.seq
        chain = stored[: info.count]
        if len(chain) == info.count and records.is_chain(chain, info):
            return PubAck(seq=chain[-1].seq, duplicate=True, first_seq=first.seq)  # stored whole before
        done = 0
        while done < len(stored) and records.is_chain(stored[: done + 1], info):
            done += 1
        if info.digest != sha or info.count != count or len(stored) > done:
            return first.seq  # other bytes, or abandoned: something else follows its parts
        try:
            return await self._publish_rest(
                subject, chunks, hdrs, record_id, sha, first_seq=first.seq, done=done, previous=stored[done - 1].seq
            )
        except WrongLastSequence:
            return first.seq  # another writer got in after the stored parts: they are abandoned now

    async def _publish_rest(
        self,
        subject: str,
        chunks: list[bytes],
        hdrs: dict[str, str],
        record_id: str,
        sha: str,
        *,
        first_seq: int,
        done: int,
        previous: int | None = None,
    ) -> PubAck:
        """Publish parts ``done + 1`` to the last, each fenced on the one before."""
        last = previous if previous is not None else first_seq
        for index in range(done + 1, len(chunks) + 1):
            part = records.part_headers(hdrs, record_id, index, len(chunks), sha)
            part[h.RECORD_FIRST_SEQ] = str(first_seq)
            ack = await self._publish_part(subject, chunks[index - 1], part, last)
            last = ack.seq
        return PubAck(seq=last, duplicate=False, first_seq=first_seq)

    async def _publish_part(self, subject: str, data: bytes, hdrs: dict[str, str], fence: int | None) -> js_api.PubAck:
        if fence is not None:
            hdrs[h.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(fence)
        try:
            return await honouring_cancel(self.js.publish(subject, data, headers=hdrs))
        except js_errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise WrongLastSequence(exc.description or "wrong last sequence") from exc
            raise

    async def publish_core(self, subject: str, data: bytes, *, headers: dict[str, str] | None = None) -> None:
        """Fire-and-forget core NATS publish (nothing is stored).

        Raises:
            PayloadTooLarge: ``data`` is larger than the server carries; nothing was sent.
        """
        self._check_size(data)
        await self.nc.publish(subject, data, headers=inject(dict(headers or {})))

    # --- reading -------------------------------------------------------------------------------------
    async def last_seq(self, stream: str, subject: str) -> int:
        """Stream sequence of the last message on ``subject``; 0 when it has none.

        This counts raw messages: it may be a part of a record being written or abandoned (see
        ``corral.bus.records``), which is what a fenced append must expect."""
        try:
            msg = await honouring_cancel(self.js.get_last_msg(stream, subject))
        except js_errors.NotFoundError:
            return 0
        return int(msg.seq or 0)

    async def last_record_seq(self, stream: str, subject: str) -> int | None:
        """Sequence of the last whole record on ``subject`` (0: none); ``None`` when the subject ends in
        a part of a record whose last part is not stored (being written, or abandoned)."""
        try:
            msg = await honouring_cancel(self.js.get_last_msg(stream, subject))
        except js_errors.NotFoundError:
            return 0
        info = records.part_info({str(k): str(v) for k, v in (msg.headers or {}).items()})
        if info is not None and info.index < info.count:
            return None
        return int(msg.seq or 0)

    async def _get_raw(self, stream: str, seq: int, *, subject: str | None = None) -> StoredMessage:
        """The message at ``seq`` (with ``subject``: the first message on it at or after ``seq``)."""
        if subject is None:
            msg = await honouring_cancel(self.js.get_msg(stream, seq))
        else:
            msg = await honouring_cancel(self.js.get_msg(stream, seq, subject=subject, next=True))
        return StoredMessage(
            subject=msg.subject or "",
            seq=int(msg.seq or seq),
            data=msg.data or b"",
            headers={str(k): str(v) for k, v in (msg.headers or {}).items()},
            time=msg.time,
        )

    async def _parts(self, stream: str, subject: str, first_seq: int, count: int) -> list[StoredMessage]:
        """Up to ``count`` messages on ``subject`` from ``first_seq`` on."""
        out: list[StoredMessage] = []
        seq = first_seq
        while len(out) < count:
            try:
                msg = await self._get_raw(stream, seq, subject=subject)
            except js_errors.NotFoundError:
                break
            out.append(msg)
            seq = msg.seq + 1
        return out

    async def _assemble(self, stream: str, msg: StoredMessage) -> StoredMessage:
        info = records.part_info(msg.headers)
        if info is None:
            return msg
        first = msg.seq if info.index == 1 else info.first_seq
        if first is None:
            raise IncompleteRecord(f"message {msg.seq} on {msg.subject} is a part without its first part's sequence")
        parts = await self._parts(stream, msg.subject, first, info.count)
        if len(parts) < info.count or not records.is_chain(parts, info):
            raise IncompleteRecord(f"the record with a part at {msg.seq} on {msg.subject} is not wholly stored")
        whole = records.join(parts)
        if whole is None:
            raise IncompleteRecord(f"the parts of the record at {msg.seq} on {msg.subject} do not match its digest")
        return whole

    async def get(self, stream: str, seq: int) -> StoredMessage:
        """The record stored at ``seq``; for a part of a record stored in parts, that whole record.

        Raises:
            IncompleteRecord: ``seq`` is a part of a record whose parts are not all stored.
        """
        return await self._assemble(stream, await self._get_raw(stream, seq))

    def read(self, stream: str, subject: str, *, after_seq: int = 0) -> Reading:
        """The records on ``subject`` (a wildcard is fine) after ``after_seq``, up to the last message
        stored when the iteration starts; iterate it with ``async for``. Afterwards its ``tail_seq``
        is the raw last sequence it covered: fence the next append on that."""
        return Reading(self, stream, subject, after_seq)

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
        reassembler = records.Reassembler(functools.partial(self._parts, stream))
        async with contextlib.aclosing(self._follow_raw(stream, subject, after_seq=after_seq)) as raw:
            async for msg in raw:
                whole = await reassembler.feed(msg)
                yield whole if whole is not None else msg.seq

    async def _follow_raw(
        self, stream: str, subject: str, *, after_seq: int | None = None
    ) -> AsyncGenerator[StoredMessage, None]:
        if after_seq is None:
            config = js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.NEW)
        elif after_seq <= 0:
            config = js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL)
        else:
            config = js_api.ConsumerConfig(
                deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1
            )
        sub = await self.js.subscribe(subject, stream=stream, ordered_consumer=True, config=config)
        try:
            async for msg in sub.messages:
                yield _stored(msg)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def subscribe_core(self, subject: str) -> AsyncIterator[tuple[bytes, dict[str, str]]]:
        """Live core NATS messages on ``subject`` until the caller stops."""
        sub = await self.nc.subscribe(subject)
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

        sub = await self.nc.subscribe(subject, cb=on_message)
        try:
            await self.flush()
            yield
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def purge(self, stream: str, subject: str, *, keep: int = 0) -> None:
        await self.js.purge_stream(stream, subject=subject, keep=keep or None)

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
        config = js_api.ConsumerConfig(
            durable_name=name,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            max_deliver=max_deliver,
            filter_subject=filter_subject,
            deliver_policy=js_api.DeliverPolicy.ALL,
        )
        sub = await self.js.pull_subscribe(filter_subject, durable=name, stream=stream, config=config)
        return PullConsumer(sub)

    # --- request-reply -------------------------------------------------------------------------------
    async def _bodies(self) -> ObjectStore:
        if self._bodies_store is None:
            try:
                self._bodies_store = await self.js.object_store(subjects.BODIES_BUCKET)
            except js_errors.BucketNotFoundError:
                self._bodies_store = await self.js.create_object_store(
                    subjects.BODIES_BUCKET, config=js_api.ObjectStoreConfig(ttl=subjects.BODIES_TTL_S)
                )
        return self._bodies_store

    async def _spill(self, data: bytes) -> dict[str, str]:
        """Put a body too large for one message in the bodies store; the header that names it."""
        name = uuid.uuid4().hex
        await honouring_cancel((await self._bodies()).put(name, data))
        return {h.BODY_REF: name}

    async def _unspill(self, data: bytes, headers: dict[str, str]) -> bytes:
        """The body a message carries: itself, or the one its ``Corral-Body-Ref`` names (read once)."""
        name = headers.get(h.BODY_REF)
        if name is None:
            return data
        store = await self._bodies()
        result = await honouring_cancel(store.get(name))
        with contextlib.suppress(Exception):
            await store.delete(name)
        return bytes(result.data or b"")

    def _fits(self, data: bytes) -> bool:
        return len(data) <= self.max_payload - records.HEADER_ROOM

    async def request(self, subject: str, data: bytes, *, timeout: float | None = None) -> bytes:
        """Send a request (of any size) and wait for the reply.

        A request or reply larger than one message travels through the bodies object store
        (``corral_bodies``); the message carries its name in ``Corral-Body-Ref``.

        Raises:
            NoResponders: nothing serves ``subject`` (the service is not running).
        """
        headers = inject({})
        if not self._fits(data):
            headers.update(await self._spill(data))
            data = b""
        try:
            msg = await honouring_cancel(
                self.nc.request(subject, data, timeout=timeout or self._settings.request_timeout_s, headers=headers)
            )
        except nats.errors.NoRespondersError as exc:
            raise NoResponders(subject) from exc
        return await self._unspill(msg.data, dict(msg.headers or {}))

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
        """Answer requests on ``subject`` (a queue group shares the load) while the block runs; the
        block starts once the server routes ``subject`` here, so another connection can ask at once.

        Every request is answered, at once, never left to the caller's deadline: a handler that
        raises is logged (with the subject) and answered with an ``RpcReply`` error (``api_error``);
        a reply larger than the server carries is replaced by ``too_large(size, limit)`` (by a
        ``request_too_large`` ``RpcReply`` without it); a reply the connection refuses to send is
        logged and answered with an ``api_error`` ``RpcReply``. With ``large_replies`` a reply of any
        size is sent, through the bodies object store when it is larger than one message.

        Each request runs in its own task, at most ``limit`` at once; on exit the subscription is
        removed and in-flight requests finish before the block returns.
        """
        slots = asyncio.Semaphore(limit)
        inflight: set[asyncio.Task[None]] = set()

        async def answer(msg: Msg) -> None:
            async with slots:
                fields = {"subject": msg.subject}
                try:
                    headers = dict(msg.headers or {})
                    reply = await handler(await self._unspill(msg.data, headers), headers)
                except Exception:
                    logger.exception("request handler failed", extra={"fields": fields})
                    reply = error_reply("api_error", f"the service answering {msg.subject} failed; retry shortly")
                if not msg.reply:
                    return
                reply_headers: dict[str, str] | None = None
                if large_replies and not self._fits(reply):
                    try:
                        reply_headers = await self._spill(reply)
                        reply = b""
                    except Exception:
                        logger.exception("reply could not be stored", extra={"fields": fields})
                if len(reply) > self.max_payload:
                    logger.warning(
                        "reply too large for the bus",
                        extra={"fields": {**fields, "size": len(reply), "limit": self.max_payload}},
                    )
                    reply = (
                        too_large(len(reply), self.max_payload)
                        if too_large is not None
                        else error_reply(
                            "request_too_large",
                            f"the answer on {msg.subject} is {len(reply)} bytes, more than the "
                            f"{self.max_payload} bytes the bus carries (NATS max_payload); ask for less",
                        )
                    )
                try:
                    await self.nc.publish(msg.reply, reply, headers=reply_headers)
                except Exception:
                    logger.exception("reply could not be sent", extra={"fields": {**fields, "size": len(reply)}})
                    failed = error_reply("api_error", f"the answer on {msg.subject} could not be sent")
                    with contextlib.suppress(Exception):
                        await self.nc.publish(msg.reply, failed)

        async def on_message(msg: Msg) -> None:
            task = asyncio.get_running_loop().create_task(answer(msg))
            inflight.add(task)
            task.add_done_callback(inflight.discard)

        sub = await self.nc.subscribe(subject, queue=queue, cb=on_message)
        try:
            # SUB is only buffered: the round trip makes the server route requests here before the
            # block runs, so a service that says it is ready is never answered "no responders"
            await self.flush()
            yield
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)

    async def flush(self) -> None:
        """Return once the server has processed every command this connection sent so far.

        nats-py's own ``flush()`` writes its PING straight to the socket, past commands still in its
        buffer, so its PONG alone says nothing about a SUB made a moment ago: the buffer goes first.
        """
        await self.nc._flush_pending(force_flush=True)
        await self.nc.flush()
