"""Storing records on a stream subject: one message, or (larger than the chunk size) parts, each
fenced on the one before, with a crashed attempt's parts completed or abandoned (the format and its
rules are in ``corral.bus.records``); or several records at once in one JetStream atomic batch.

An atomic batch (nats-server >= 2.12, a stream with ``allow_atomic``) is published as plain messages
carrying ``Nats-Batch-Id``/``Nats-Batch-Sequence``, the last one also ``Nats-Batch-Commit: 1`` and a
reply subject: the server stores nothing until the commit, then every message with consecutive
stream sequences, or none (a batch not committed within its timeout, 10 s by default, is dropped).
Only the first message may carry ``Nats-Expected-Last-Subject-Sequence``: the fence holds for the
whole batch. A batch holding a ``Nats-Msg-Id`` the stream has already stored is refused whole.

``Bus.publish`` stores a record under a ``PRODUCER`` span of its own, ``Bus.publish_batch`` a batch
under one (OpenTelemetry messaging conventions: ``messaging.system=nats``,
``messaging.destination.name`` the subject), whose context is the one the records' headers carry,
so a consumer's span is that span's child or links to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

from corral.bus import records
from corral.bus.cancellation import honouring_cancel
from corral.bus.errors import PartlyStored, PayloadTooLarge, WrongLastSequence
from corral.bus.messages import PubAck
from corral.bus.producing import producer_span
from corral.bus.reading import parts
from corral.contracts import headers as h
from corral.telemetry import inject

logger = logging.getLogger(__name__)

_WRONG_LAST_SEQUENCE = (10071, 10164)

_DUPLICATE_IN_PROCESS = 10158
"""A clustered stream is still storing a message with the same ``Nats-Msg-Id`` (another writer's,
or this one's earlier attempt): asked again once that is decided, the publish is acknowledged as a
duplicate, or stored if the other attempt failed."""

MAX_BATCH_MESSAGES = 1000
"""nats-server's default ``jetstream.limits.batch.max_msgs``: larger batches are stored one by one."""

_BATCH_REFUSED = {
    10199: "more messages than the server allows in one batch",
    10201: "a message id already stored (a retried append)",
    10210: "too many batches in flight on the stream",
}
"""Refusals after which nothing of the batch is stored and storing its records one by one is right."""


@dataclass(frozen=True)
class OutgoingRecord:
    """One record of ``Bus.publish_batch``."""

    data: bytes
    headers: dict[str, str]
    msg_id: str | None = None


class _BatchRefused(Exception):
    pass


class RecordWriter:
    """Publishes records of any size through ``js`` (see ``Bus.publish``); batches through ``nc``."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        chunk_size: int,
        max_payload: int,
        nc: Client | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._js = js
        self._nc = nc
        self._timeout = timeout
        self._chunk_size = chunk_size
        self._max_payload = max_payload

    async def publish_traced(self, subject: str, record: OutgoingRecord, *, fence: int | None) -> PubAck:
        """``publish`` under a ``PRODUCER`` span of its own, whose context the record's headers carry."""
        with producer_span(subject, len(record.data)) as span:
            hdrs = inject(dict(record.headers))
            ack = await self.publish(subject, record.data, hdrs, msg_id=record.msg_id, fence=fence)
            span.set_attribute("messaging.message.id", str(ack.seq))
            return ack

    async def publish_traced_batch(
        self, subject: str, batch: Sequence[OutgoingRecord], *, fence: int | None, atomic: bool = True
    ) -> list[PubAck]:
        """``publish_batch`` (or, not ``atomic``, ``publish_each``) under one ``PRODUCER`` span, whose
        context every record's headers carry."""
        with producer_span(subject, sum(len(r.data) for r in batch)) as span:
            traced = [OutgoingRecord(r.data, inject(dict(r.headers)), r.msg_id) for r in batch]
            if atomic:
                acks = await self.publish_batch(subject, traced, fence=fence)
            else:
                acks = await self.publish_each(subject, traced, fence=fence)
            if acks:
                span.set_attribute("messaging.message.id", str(acks[-1].seq))
                span.set_attribute("messaging.batch.message_count", len(acks))
            return acks

    async def publish_batch(self, subject: str, batch: Sequence[OutgoingRecord], *, fence: int | None) -> list[PubAck]:
        """Store ``batch`` in order on ``subject``, all or nothing, fenced once on ``fence``: one
        atomic batch. A batch the server refuses for a reason that stored none of it (a message id
        it holds already, its limits) is stored one record at a time, each fenced on the one before,
        as ``publish`` does: then duplicates are acknowledged one by one."""
        messages: list[tuple[bytes, dict[str, str]]] = []
        ends: list[tuple[int, int]] = []  # per record: (index of its first message, of its last)
        for record in batch:
            start = len(messages)
            messages.extend(self._messages(record))
            ends.append((start, len(messages) - 1))
        if len(batch) == 1 and len(messages) == 1:
            only = batch[0]
            return [await self.publish_one(subject, only.data, only.headers, msg_id=only.msg_id, fence=fence)]
        if self._nc is not None and 1 < len(messages) <= MAX_BATCH_MESSAGES:
            try:
                last = await self._commit(subject, messages, fence)
            except _BatchRefused as exc:
                logger.info(
                    "atomic batch refused; storing its records one by one",
                    extra={"fields": {"subject": subject, "records": len(batch), "reason": str(exc)}},
                )
            else:
                first = last - len(messages) + 1
                return [
                    PubAck(seq=first + end, duplicate=False, first_seq=first + start if end > start else None)
                    for start, end in ends
                ]
        return await self.publish_each(subject, batch, fence=fence)

    async def publish_each(self, subject: str, batch: Sequence[OutgoingRecord], *, fence: int | None) -> list[PubAck]:
        """Store ``batch`` in order on ``subject``, one record at a time, each fenced on the one before
        (the first on ``fence``): a writer stopped midway leaves a prefix, which a retry with the same
        message ids completes (the stored ones are acknowledged as duplicates). Fenced out after the
        first record: ``PartlyStored``."""
        acks: list[PubAck] = []
        for record in batch:
            try:
                ack = await self.publish(subject, record.data, record.headers, msg_id=record.msg_id, fence=fence)
            except WrongLastSequence as exc:
                if not acks:
                    raise
                raise PartlyStored(f"{exc} after {len(acks)} of {len(batch)} records", stored=len(acks)) from exc
            if fence is not None and not ack.duplicate:
                fence = ack.seq
            acks.append(ack)
        return acks

    def _messages(self, record: OutgoingRecord) -> list[tuple[bytes, dict[str, str]]]:
        if len(record.data) <= self._chunk_size:
            hdrs = dict(record.headers)
            if record.msg_id is not None:
                hdrs[h.MSG_ID] = record.msg_id
            return [(record.data, hdrs)]
        record_id = record.msg_id or uuid.uuid4().hex
        sha = records.digest(record.data)
        chunks = records.split(record.data, self._chunk_size)
        out: list[tuple[bytes, dict[str, str]]] = []
        for index, chunk in enumerate(chunks, 1):
            hdrs = records.part_headers(record.headers, record_id, index, len(chunks), sha)
            if index > 1:
                hdrs[h.RECORD_ATOMIC] = "1"
            out.append((chunk, hdrs))
        return out

    async def _commit(self, subject: str, messages: list[tuple[bytes, dict[str, str]]], fence: int | None) -> int:
        """Publish ``messages`` as one atomic batch; the stream sequence of its last message."""
        assert self._nc is not None
        batch_id = uuid.uuid4().hex
        count = len(messages)
        for index, (data, hdrs) in enumerate(messages, 1):
            if len(data) > self._max_payload:
                raise PayloadTooLarge(len(data), self._max_payload)
            hdrs[h.BATCH_ID] = batch_id
            hdrs[h.BATCH_SEQUENCE] = str(index)
            if index == 1 and fence is not None:
                hdrs[h.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(fence)
            if index < count:
                await self._nc.publish(subject, data, headers=hdrs)
        data, hdrs = messages[-1]
        hdrs[h.BATCH_COMMIT] = "1"
        try:
            reply = await honouring_cancel(self._nc.request(subject, data, timeout=self._timeout, headers=hdrs))
        except nats.errors.NoRespondersError:
            raise js_errors.NoStreamResponseError from None
        answer = json.loads(reply.data)
        error = answer.get("error")
        if error:
            code = error.get("err_code")
            if code in _WRONG_LAST_SEQUENCE:
                raise WrongLastSequence(error.get("description") or "wrong last sequence")
            if code in _BATCH_REFUSED:
                raise _BatchRefused(_BATCH_REFUSED[code])
            js_errors.APIError.from_error(error)  # raises the error's class
            raise js_errors.APIError(description=str(error))
        if answer.get("batch") != batch_id or answer.get("count") != count:
            raise js_errors.APIError(description=f"unexpected answer to an atomic batch: {reply.data!r}")
        return int(answer["seq"])

    async def publish(
        self, subject: str, data: bytes, hdrs: dict[str, str], *, msg_id: str | None, fence: int | None
    ) -> PubAck:
        if len(data) <= self._chunk_size:
            return await self.publish_one(subject, data, hdrs, msg_id=msg_id, fence=fence)
        base = msg_id or uuid.uuid4().hex
        record_id = base
        while True:
            outcome = await self.publish_parts(subject, data, hdrs, record_id, fence=fence)
            if isinstance(outcome, PubAck):
                return outcome
            # An earlier attempt under this id stopped mid-record and was abandoned: store it afresh.
            record_id = f"{base}@{outcome}"

    async def publish_one(
        self, subject: str, data: bytes, hdrs: dict[str, str], *, msg_id: str | None, fence: int | None
    ) -> PubAck:
        hdrs = dict(hdrs)
        if msg_id is not None:
            hdrs[h.MSG_ID] = msg_id
        if fence is not None:
            hdrs[h.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(fence)
        if len(data) > self._max_payload:
            raise PayloadTooLarge(len(data), self._max_payload)
        ack = await self._stored(subject, data, hdrs)
        return PubAck(seq=ack.seq, duplicate=bool(ack.duplicate))

    async def publish_parts(
        self, subject: str, data: bytes, hdrs: dict[str, str], record_id: str, *, fence: int | None
    ) -> PubAck | int:
        """Store ``data`` as parts of ``record_id``; or, when an earlier attempt under this id left its
        parts abandoned (something else follows them) or stored other bytes, that attempt's first
        part's sequence (the caller then stores the record under another id)."""
        sha = records.digest(data)
        chunks = records.split(data, self._chunk_size)
        count = len(chunks)
        first = await self.publish_part(subject, chunks[0], records.part_headers(hdrs, record_id, 1, count, sha), fence)
        if not first.duplicate:
            return await self.publish_rest(subject, chunks, hdrs, record_id, sha, first_seq=first.seq, done=1)
        # The server checks the fence before the id, so this attempt expected the subject's true tail.
        stored = await parts(self._js, first.stream, subject, first.seq, count + 1)
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
            return await self.publish_rest(
                subject, chunks, hdrs, record_id, sha, first_seq=first.seq, done=done, previous=stored[done - 1].seq
            )
        except WrongLastSequence:
            return first.seq  # another writer got in after the stored parts: they are abandoned now

    async def publish_rest(
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
            ack = await self.publish_part(subject, chunks[index - 1], part, last)
            last = ack.seq
        return PubAck(seq=last, duplicate=False, first_seq=first_seq)

    async def publish_part(self, subject: str, data: bytes, hdrs: dict[str, str], fence: int | None) -> js_api.PubAck:
        if fence is not None:
            hdrs[h.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(fence)
        return await self._stored(subject, data, hdrs)

    async def _stored(self, subject: str, data: bytes, hdrs: dict[str, str]) -> js_api.PubAck:
        """One JetStream publish. A fenced-out one raises ``WrongLastSequence``; one whose message
        id the stream is still storing for another attempt is asked again, pausing a little longer
        each time, for up to the publish timeout."""
        deadline = time.monotonic() + self._timeout
        pause = 0.005
        while True:
            try:
                return await honouring_cancel(self._js.publish(subject, data, headers=hdrs))
            except js_errors.APIError as exc:
                if exc.err_code in _WRONG_LAST_SEQUENCE:
                    raise WrongLastSequence(exc.description or "wrong last sequence") from exc
                if exc.err_code != _DUPLICATE_IN_PROCESS or time.monotonic() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
