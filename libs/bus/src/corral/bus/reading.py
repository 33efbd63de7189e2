"""Reading a subject's history: raw messages, records stored in parts reassembled, live follows."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

from corral.bus import records
from corral.bus.cancellation import honouring_cancel
from corral.bus.errors import IncompleteRecord
from corral.bus.messages import stored
from corral.bus.records import StoredMessage


async def last_seq(js: JetStreamContext, stream: str, subject: str) -> int:
    """Stream sequence of the last message on ``subject``; 0 when it has none.

    This counts raw messages: it may be a part of a record being written or abandoned (see
    ``corral.bus.records``), which is what a fenced append must expect."""
    try:
        msg = await honouring_cancel(js.get_last_msg(stream, subject))
    except js_errors.NotFoundError:
        return 0
    return int(msg.seq or 0)


async def last_record_seq(js: JetStreamContext, stream: str, subject: str) -> int | None:
    """Sequence of the last whole record on ``subject`` (0: none); ``None`` when the subject ends in
    a part of a record whose last part is not stored (being written, or abandoned)."""
    try:
        msg = await honouring_cancel(js.get_last_msg(stream, subject))
    except js_errors.NotFoundError:
        return 0
    info = records.part_info({str(k): str(v) for k, v in (msg.headers or {}).items()})
    if info is not None and info.index < info.count:
        return None
    return int(msg.seq or 0)


async def get_raw(js: JetStreamContext, stream: str, seq: int, *, subject: str | None = None) -> StoredMessage:
    """The message at ``seq`` (with ``subject``: the first message on it at or after ``seq``)."""
    if subject is None:
        msg = await honouring_cancel(js.get_msg(stream, seq))
    else:
        msg = await honouring_cancel(js.get_msg(stream, seq, subject=subject, next=True))
    return StoredMessage(
        subject=msg.subject or "",
        seq=int(msg.seq or seq),
        data=msg.data or b"",
        headers={str(k): str(v) for k, v in (msg.headers or {}).items()},
        time=msg.time,
    )


async def parts(js: JetStreamContext, stream: str, subject: str, first_seq: int, count: int) -> list[StoredMessage]:
    """Up to ``count`` messages on ``subject`` from ``first_seq`` on."""
    out: list[StoredMessage] = []
    seq = first_seq
    while len(out) < count:
        try:
            msg = await get_raw(js, stream, seq, subject=subject)
        except js_errors.NotFoundError:
            break
        out.append(msg)
        seq = msg.seq + 1
    return out


async def assemble(js: JetStreamContext, stream: str, msg: StoredMessage) -> StoredMessage:
    info = records.part_info(msg.headers)
    if info is None:
        return msg
    first = info.first_part_seq(msg.seq)
    if first is None:
        raise IncompleteRecord(f"message {msg.seq} on {msg.subject} is a part without its first part's sequence")
    found = await parts(js, stream, msg.subject, first, info.count)
    if len(found) < info.count or not records.is_chain(found, info):
        raise IncompleteRecord(f"the record with a part at {msg.seq} on {msg.subject} is not wholly stored")
    whole = records.join(found)
    if whole is None:
        raise IncompleteRecord(f"the parts of the record at {msg.seq} on {msg.subject} do not match its digest")
    return whole


async def follow_raw(
    js: JetStreamContext, stream: str, subject: str, *, after_seq: int | None = None
) -> AsyncGenerator[StoredMessage, None]:
    if after_seq is None:
        config = js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.NEW)
    elif after_seq <= 0:
        config = js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL)
    else:
        config = js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1
        )
    # The consumer is created with a request whose wait can drop a cancellation (see
    # ``corral.bus.cancellation``): a read stopped while it starts would otherwise follow for good.
    sub = await honouring_cancel(
        js.subscribe(subject, stream=stream, ordered_consumer=True, config=config), undo=_unsubscribe
    )
    try:
        async for msg in sub.messages:
            yield stored(msg)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _unsubscribe(sub: JetStreamContext.PushSubscription) -> None:
    await sub.unsubscribe()


async def follow_records(
    js: JetStreamContext, stream: str, subject: str, *, after_seq: int | None = None
) -> AsyncGenerator[StoredMessage | int, None]:
    """``Bus.follow_positions``: each record whole when its last part arrives, and the raw sequence of
    each message that completes none."""
    reassembler = records.Reassembler(functools.partial(parts, js, stream))
    async with contextlib.aclosing(follow_raw(js, stream, subject, after_seq=after_seq)) as raw:
        async for msg in raw:
            whole = await reassembler.feed(msg)
            yield whole if whole is not None else msg.seq


class Reading:
    """The records on a subject up to its last message when iterated (see ``Bus.read``)."""

    def __init__(self, js: JetStreamContext, stream: str, subject: str, after_seq: int) -> None:
        self._js = js
        self._stream = stream
        self._subject = subject
        self._after_seq = after_seq
        self.tail_seq = after_seq
        """The raw last sequence the read covered (parts of an incomplete record included); set once
        iteration has started."""

    def __aiter__(self) -> AsyncIterator[StoredMessage]:
        return self._records()

    async def _records(self) -> AsyncIterator[StoredMessage]:
        last = await last_seq(self._js, self._stream, self._subject)
        self.tail_seq = max(self._after_seq, last)
        if last <= self._after_seq:
            return
        reassembler = records.Reassembler(functools.partial(parts, self._js, self._stream))
        async with contextlib.aclosing(
            follow_raw(self._js, self._stream, self._subject, after_seq=self._after_seq)
        ) as raw:
            async for msg in raw:
                whole = await reassembler.feed(msg)
                if whole is not None:
                    yield whole
                if msg.seq >= last:
                    return
