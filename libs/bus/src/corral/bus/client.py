"""``Bus``: publish, fenced appends, reads of a subject's history, live follows, request-reply, KV.

Every message published through here carries the current trace context in its headers, and a task
cancelled while it waits for a reply, an ack or a fetch is never handed the result instead (see
``corral.bus.cancellation``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

from corral.bus.cancellation import honouring_cancel
from corral.bus.errors import NoResponders, PayloadTooLarge, StreamMismatch, WrongLastSequence
from corral.bus.kv import KeyValueBucket
from corral.bus.objects import ObjectBucket
from corral.contracts import headers as h
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
    duplicate: bool


@dataclass(frozen=True)
class StoredMessage:
    subject: str
    seq: int
    data: bytes
    headers: dict[str, str]
    time: datetime | None


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


def _enum_value(value: object) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


class Bus:
    """A NATS connection with JetStream. Build it with ``Bus.connect``."""

    def __init__(self, nc: Client, settings: NatsSettings) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=settings.request_timeout_s)
        self._settings = settings

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, settings: NatsSettings, *, name: str) -> AsyncIterator[Bus]:
        """Connect (retrying until ``connect_timeout_s``), and drain the connection on exit."""
        nc = await nats.connect(
            settings.url,
            name=name,
            connect_timeout=settings.connect_timeout_s,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
        )
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
                )
            info = await self.js.stream_info(spec.name)
        cfg = info.config
        found = {
            "storage": _enum_value(cfg.storage),
            "retention": _enum_value(cfg.retention),
            "duplicate_window_s": float(cfg.duplicate_window or 0),
            "subjects": tuple(cfg.subjects or ()),
        }
        wanted = {
            "storage": spec.storage,
            "retention": spec.retention,
            "duplicate_window_s": spec.duplicate_window_s,
            "subjects": spec.subjects,
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
    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        expected_last_subject_seq: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> PubAck:
        """Store ``data`` on a stream subject and wait for the ack.

        Raises:
            WrongLastSequence: ``expected_last_subject_seq`` was given and the subject moved on.
            PayloadTooLarge: ``data`` is larger than the server carries; nothing was stored.
        """
        self._check_size(data)
        hdrs = inject(dict(headers or {}))
        if msg_id is not None:
            hdrs[h.MSG_ID] = msg_id
        if expected_last_subject_seq is not None:
            hdrs[h.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(expected_last_subject_seq)
        try:
            ack = await honouring_cancel(self.js.publish(subject, data, headers=hdrs))
        except js_errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise WrongLastSequence(exc.description or "wrong last sequence") from exc
            raise
        return PubAck(seq=ack.seq, duplicate=bool(ack.duplicate))

    async def publish_core(self, subject: str, data: bytes, *, headers: dict[str, str] | None = None) -> None:
        """Fire-and-forget core NATS publish (nothing is stored).

        Raises:
            PayloadTooLarge: ``data`` is larger than the server carries; nothing was sent.
        """
        self._check_size(data)
        await self.nc.publish(subject, data, headers=inject(dict(headers or {})))

    # --- reading -------------------------------------------------------------------------------------
    async def last_seq(self, stream: str, subject: str) -> int:
        """Stream sequence of the last message on ``subject``; 0 when it has none."""
        try:
            msg = await honouring_cancel(self.js.get_last_msg(stream, subject))
        except js_errors.NotFoundError:
            return 0
        return int(msg.seq or 0)

    async def get(self, stream: str, seq: int) -> StoredMessage:
        msg = await honouring_cancel(self.js.get_msg(stream, seq))
        return StoredMessage(
            subject=msg.subject or "",
            seq=int(msg.seq or seq),
            data=msg.data or b"",
            headers={str(k): str(v) for k, v in (msg.headers or {}).items()},
            time=msg.time,
        )

    async def read(self, stream: str, subject: str, *, after_seq: int = 0) -> AsyncIterator[StoredMessage]:
        """The messages on ``subject`` after ``after_seq``, up to the last one stored when called."""
        last = await self.last_seq(stream, subject)
        if last <= after_seq:
            return
        async for msg in self.follow(stream, subject, after_seq=after_seq):
            yield msg
            if msg.seq >= last:
                return

    async def follow(self, stream: str, subject: str, *, after_seq: int | None = None) -> AsyncIterator[StoredMessage]:
        """Live messages on ``subject`` in order (an ordered consumer), until the caller stops.

        ``after_seq=None`` starts with messages stored from now on; an int replays from after it.
        """
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
    async def request(self, subject: str, data: bytes, *, timeout: float | None = None) -> bytes:
        """Send a request and wait for the reply.

        Raises:
            NoResponders: nothing serves ``subject`` (the service is not running).
            PayloadTooLarge: ``data`` is larger than the server carries; nothing was sent.
        """
        self._check_size(data)
        try:
            msg = await honouring_cancel(
                self.nc.request(subject, data, timeout=timeout or self._settings.request_timeout_s, headers=inject({}))
            )
        except nats.errors.NoRespondersError as exc:
            raise NoResponders(subject) from exc
        return msg.data

    @contextlib.asynccontextmanager
    async def serve(
        self,
        subject: str,
        handler: Handler,
        *,
        queue: str,
        limit: int = 256,
        too_large: Callable[[int, int], bytes] | None = None,
    ) -> AsyncIterator[None]:
        """Answer requests on ``subject`` (a queue group shares the load) while the block runs; the
        block starts once the server routes ``subject`` here, so another connection can ask at once.

        A reply larger than the server carries is replaced by ``too_large(size, limit)`` (by an empty
        reply without it), so the caller hears at once rather than waiting out its deadline.

        Each request runs in its own task, at most ``limit`` at once; on exit the subscription is
        removed and in-flight requests finish before the block returns.
        """
        slots = asyncio.Semaphore(limit)
        inflight: set[asyncio.Task[None]] = set()

        async def answer(msg: Msg) -> None:
            async with slots:
                try:
                    reply = await handler(msg.data, dict(msg.headers or {}))
                except Exception:
                    logger.exception("request handler failed", extra={"fields": {"subject": msg.subject}})
                    return
                if msg.reply:
                    if len(reply) > self.max_payload:
                        logger.warning(
                            "reply too large for the bus",
                            extra={"fields": {"subject": msg.subject, "size": len(reply), "limit": self.max_payload}},
                        )
                        reply = too_large(len(reply), self.max_payload) if too_large is not None else b""
                    await msg.respond(reply)

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
