"""Records of any size on a stream: stored in parts, read back whole.

A server carries messages up to its ``max_payload`` (1 MiB by default). ``Bus.publish`` stores a
record whose encoding is larger than the chunk size (``CORRAL_NATS_RECORD_CHUNK_BYTES``; by default
``max_payload`` less 64 KiB for headers) as ``n`` consecutive messages on the record's subject:

- every part carries ``Corral-Record-Id`` (the publish's ``Nats-Msg-Id``, or a fresh id),
  ``Corral-Record-Part: <i>/<n>`` and ``Corral-Record-Digest`` (hex SHA-256 of the whole record);
  parts 2..n also carry ``Corral-Record-First-Seq``, the stream sequence of part 1;
- part ``i`` is de-duplicated as ``Nats-Msg-Id: <record id>:<i>``;
- the parts are a fenced chain: part 1 carries the caller's ``Nats-Expected-Last-Subject-Sequence``
  (if any), part ``i`` expects the sequence of part ``i-1``, so the parts are consecutive on the
  subject and nothing else can land between them.

A record that fits in one chunk is one message without these headers, as before.

``Bus.publish_batch`` stores several records in one JetStream atomic batch: every message of the
batch, parts included, is stored with consecutive stream sequences, or none is. Its parts carry the
headers above but, instead of ``Corral-Record-First-Seq`` (part 1's sequence is not known before the
batch is stored), ``Corral-Record-Atomic: 1``: part ``i`` is ``i - 1`` sequences after part 1. Such
parts are never left incomplete, so the rules below for crashed writers do not concern them.

Readers (``Bus.read``, ``Bus.follow``, ``Bus.get``) yield ONE ``StoredMessage`` per record, whose
``seq`` is its last part's sequence ("resume after seq" keeps its meaning: everything up to it is
read) and ``first_seq`` its first part's. A reader that starts in the middle of a record (after a
sequence that is one of its parts) fetches the earlier parts by ``Corral-Record-First-Seq``.

A writer that dies mid-record leaves an incomplete part set. A retry of the same publish (same
``Nats-Msg-Id``, same bytes) completes it: the parts already stored come back as duplicates and the
rest are published, fenced on the last stored part. Once anything else is stored on the subject
after an incomplete set, the set is abandoned: readers skip it, and a retry under the same id that
finds it abandoned stores the record afresh under the record id ``<msg id>@<first part's seq>``.
A writer that finds part 1 of its id stored with other bytes (a retry that re-encoded the record)
reports the stored record as the duplicate when it is complete, and stores its own afresh when not.

Fencing counts raw sequences: ``Bus.last_seq`` is the subject's last message, an abandoned part
included, and ``Reading.tail_seq`` is the raw last sequence a read covered. A writer fences its next
append on those, never on the last whole record's sequence alone, or an abandoned part would fence it
out forever.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from corral.contracts import headers as h

logger = logging.getLogger(__name__)

HEADER_ROOM = 64 * 1024
"""Bytes of ``max_payload`` left for a part's headers by the default chunk size."""


@dataclass(frozen=True)
class StoredMessage:
    """One record read from a stream (a single message, or a record's parts joined)."""

    subject: str
    seq: int
    """The stream sequence of the record's last (or only) message."""
    data: bytes
    headers: dict[str, str]
    time: datetime | None
    first_seq: int | None = None
    """For a record stored in parts, the stream sequence of its first part (``None``: one message)."""


@dataclass(frozen=True)
class PartInfo:
    record_id: str
    index: int
    count: int
    digest: str
    first_seq: int | None
    atomic: bool = False
    """Stored in one atomic batch: the parts have consecutive stream sequences."""

    def first_part_seq(self, seq: int) -> int | None:
        """The stream sequence of part 1, given this part's ``seq`` (``None``: not known)."""
        if self.index == 1:
            return seq
        if self.first_seq is not None:
            return self.first_seq
        return seq - self.index + 1 if self.atomic else None


def part_info(headers: dict[str, str]) -> PartInfo | None:
    """What a message's headers say about the record it is part of (``None``: a whole record)."""
    part = headers.get(h.RECORD_PART)
    if part is None:
        return None
    try:
        index, count = (int(x) for x in part.split("/", 1))
        first = headers.get(h.RECORD_FIRST_SEQ)
        return PartInfo(
            record_id=headers.get(h.RECORD_ID, ""),
            index=index,
            count=count,
            digest=headers.get(h.RECORD_DIGEST, ""),
            first_seq=int(first) if first else None,
            atomic=headers.get(h.RECORD_ATOMIC) == "1",
        )
    except ValueError:
        return None


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def part_headers(base: dict[str, str], record_id: str, index: int, count: int, sha: str) -> dict[str, str]:
    out = dict(base)
    out[h.RECORD_ID] = record_id
    out[h.RECORD_PART] = f"{index}/{count}"
    out[h.RECORD_DIGEST] = sha
    out[h.MSG_ID] = f"{record_id}:{index}"
    return out


def join(parts: list[StoredMessage]) -> StoredMessage | None:
    """The record the complete, ordered ``parts`` hold; ``None`` when they do not match its digest."""
    info = part_info(parts[0].headers)
    data = b"".join(p.data for p in parts)
    if info is None or digest(data) != info.digest:
        logger.warning(
            "record parts do not match their digest; skipped",
            extra={"fields": {"subject": parts[0].subject, "first_seq": parts[0].seq, "last_seq": parts[-1].seq}},
        )
        return None
    headers = {k: v for k, v in parts[0].headers.items() if k not in (h.RECORD_PART, h.RECORD_FIRST_SEQ)}
    headers[h.MSG_ID] = info.record_id
    last = parts[-1]
    return StoredMessage(
        subject=last.subject, seq=last.seq, data=data, headers=headers, time=last.time, first_seq=parts[0].seq
    )


def is_chain(parts: list[StoredMessage], info: PartInfo) -> bool:
    """Whether ``parts`` are parts 1..len of the record ``info`` belongs to, in order."""
    for i, p in enumerate(parts, 1):
        pi = part_info(p.headers)
        if pi is None or pi.record_id != info.record_id or pi.index != i or pi.count != info.count:
            return False
    return True


FetchParts = Callable[[str, int, int], Awaitable[list[StoredMessage]]]
"""``(subject, first_seq, count)``: up to ``count`` raw messages on ``subject`` from ``first_seq`` on."""


class Reassembler:
    """Turns raw messages (in stream order, one subject or many) into whole records.

    An incomplete part set is held per subject until its next part arrives; anything else on that
    subject abandons it (it is dropped, never yielded).
    """

    def __init__(self, fetch: FetchParts) -> None:
        self._fetch = fetch
        self._pending: dict[str, list[StoredMessage]] = {}

    async def feed(self, msg: StoredMessage) -> StoredMessage | None:
        """The record ``msg`` completes (``msg`` itself when it is a whole record), or ``None``."""
        info = part_info(msg.headers)
        if info is None:
            self._drop(msg.subject)
            return msg
        pending = self._pending.get(msg.subject)
        if info.index == 1:
            self._drop(msg.subject)
            pending = [msg]
        elif pending is not None and is_chain([*pending, msg], info):
            pending.append(msg)
        else:
            # Started mid-record (a resume after one of its parts): fetch the parts before this one.
            self._drop(msg.subject)
            first = info.first_part_seq(msg.seq)
            if first is None:
                return None
            earlier = await self._fetch(msg.subject, first, info.index - 1)
            pending = [*earlier, msg]
            if not is_chain(pending, info):
                return None
        if len(pending) < info.count:
            self._pending[msg.subject] = pending
            return None
        self._pending.pop(msg.subject, None)
        return join(pending)

    def _drop(self, subject: str) -> None:
        dropped = self._pending.pop(subject, None)
        if dropped:
            logger.info(
                "incomplete record skipped (its writer stopped mid-record)",
                extra={"fields": {"subject": subject, "first_seq": dropped[0].seq, "parts": len(dropped)}},
            )
