"""What the bus hands out: publish acks, durable-consumer deliveries and pull consumers."""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import errors as js_errors

from corral.bus.cancellation import honouring_cancel
from corral.bus.records import StoredMessage


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

    async def pending(self) -> int:
        """Messages of the consumer's subjects not delivered yet (its backlog), as the server counts them."""
        info = await self._sub.consumer_info()
        return int(info.num_pending or 0)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


class OpenConsumers:
    """The pull consumers a connection handed out, to unsubscribe before the connection drains.

    A pull subscription left to the drain can keep it waiting for its whole ``drain_timeout``:
    nats-py's drain waits until every message the subscription was handed is marked done, and a
    fetch that takes a stale message off the queue (the late ``408`` of an earlier fetch that timed
    out) or is cancelled while it waits never marks it. What a pull consumer was handed and did not
    acknowledge is redelivered after its ``ack_wait``, so nothing is lost."""

    def __init__(self) -> None:
        self._open: weakref.WeakSet[PullConsumer] = weakref.WeakSet()

    def track(self, sub: JetStreamContext.PullSubscription) -> PullConsumer:
        consumer = PullConsumer(sub)
        self._open.add(consumer)
        return consumer

    async def close_all(self) -> None:
        for consumer in list(self._open):
            await consumer.close()


def stored(msg: Msg) -> StoredMessage:
    meta = msg.metadata
    return StoredMessage(
        subject=msg.subject,
        seq=meta.sequence.stream,
        data=msg.data,
        headers=dict(msg.headers or {}),
        time=meta.timestamp,
    )
