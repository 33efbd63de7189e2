"""Storing a record on a stream subject: one message, or (larger than the chunk size) parts, each
fenced on the one before, with a crashed attempt's parts completed or abandoned (the format and its
rules are in ``corral.bus.records``)."""

from __future__ import annotations

import uuid

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

from corral.bus import records
from corral.bus.cancellation import honouring_cancel
from corral.bus.errors import PayloadTooLarge, WrongLastSequence
from corral.bus.messages import PubAck
from corral.bus.reading import parts
from corral.contracts import headers as h

_WRONG_LAST_SEQUENCE = (10071, 10164)


class RecordWriter:
    """Publishes records of any size through ``js`` (see ``Bus.publish``)."""

    def __init__(self, js: JetStreamContext, *, chunk_size: int, max_payload: int) -> None:
        self._js = js
        self._chunk_size = chunk_size
        self._max_payload = max_payload

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
        try:
            ack = await honouring_cancel(self._js.publish(subject, data, headers=hdrs))
        except js_errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise WrongLastSequence(exc.description or "wrong last sequence") from exc
            raise
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
        try:
            return await honouring_cancel(self._js.publish(subject, data, headers=hdrs))
        except js_errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise WrongLastSequence(exc.description or "wrong last sequence") from exc
            raise
