"""The session log and the catalog on JetStream: the only place Corral's durable state is written.

Every append is checked against the session's state (a fold of its subject, cached here), stamped
with an id and ``processed_at``, and published with ``Nats-Msg-Id`` (dedupe) and
``Nats-Expected-Last-Subject-Sequence`` (fencing); a client's append goes in one JetStream atomic
batch (``Bus.publish_batch``): one round trip, stored all or none, fenced once. The harness's
appends are stored one record at a time, each fenced on the one before: the harness plans every
step from the log as it is, so a prefix an interrupted append left is where its next run starts
(as after a crash between two appends), and the batch, which costs the server several times the
CPU on a stream of one replica (see ``Bus.publish_batch``), would buy it nothing. A record of any
size is stored: the bus stores one larger than a message in parts and reads it back whole
(``corral.bus.records``); fencing counts raw sequences, so a half record a crashed writer left
behind never fences the next append out. A second session-store, or a stale cache, loses the race
on the expected sequence: the state is reloaded from the stream and the append re-decided. An
append the cached state refuses is refused only if the subject has not moved past it (another
session-store may have written since).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from corral.bus import Bus, OutgoingRecord, PartlyStored, WrongLastSequence
from corral.contracts import headers as h
from corral.contracts import ids, subjects
from corral.contracts.api.admin import ApiKey
from corral.contracts.api.errors import ApiError, conflict
from corral.contracts.clock import now_rfc3339
from corral.contracts.log import (
    API_KEY_RECORD_ADAPTER,
    ApiKeyCreated,
    SessionRecord,
    fold_api_key,
    parse_session_record,
)
from corral.session_store import metrics
from corral.session_store.catalog_cache import CatalogCache
from corral.session_store.domain.sessions import SessionState

logger = logging.getLogger(__name__)

_MAX_RACES = 5


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Stored:
    seq: int
    record: dict[str, Any]
    """The record as stored (what the API shows)."""
    typed: SessionRecord
    """The same record decoded into the contracts' union (what the folds take)."""


def decoded(seq: int, data: bytes) -> Stored:
    """A stored session record, decoded once: raw for the API, typed for the folds."""
    return Stored(seq, json.loads(data), parse_session_record(data))


Decide = Callable[[SessionState], list[dict[str, Any]]]
"""Given the current state, return the records to append (raising ``ApiError`` to refuse)."""


class SessionLog:
    def __init__(self, bus: Bus, *, cache_size: int) -> None:
        self._bus = bus
        self._cache: OrderedDict[str, SessionState] = OrderedDict()
        self._cache_size = cache_size
        self._locks: dict[str, asyncio.Lock] = {}
        self.high_water = 0
        """The highest stream sequence this store has written; readers wait for the projection to reach it."""

    def _lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = asyncio.Lock()
        return lock

    async def _load(self, session_id: str) -> SessionState:
        state = SessionState(session_id=session_id)
        reading = self._bus.read(subjects.SESSIONS_STREAM, subjects.session_log(session_id))
        async for msg in reading:
            state.apply(parse_session_record(msg.data), msg.seq)
        state.last_seq = max(state.last_seq, reading.tail_seq)  # fence past an abandoned half record
        return state

    def _remember(self, state: SessionState) -> None:
        self._cache[state.session_id] = state
        self._cache.move_to_end(state.session_id)
        while len(self._cache) > self._cache_size:
            old, _ = self._cache.popitem(last=False)
            lock = self._locks.get(old)
            if lock is not None and not lock.locked():
                del self._locks[old]

    async def state(self, session_id: str) -> SessionState:
        """The session's state as of the last record this store knows of."""
        cached = self._cache.get(session_id)
        if cached is not None:
            return cached
        async with self._lock(session_id):
            cached = self._cache.get(session_id)
            if cached is None:
                cached = await self._load(session_id)
                self._remember(cached)
            return cached

    async def records(self, session_id: str) -> tuple[SessionState, list[Stored]]:
        """Everything on the session's subject, read from the stream (not the cache)."""
        state = SessionState(session_id=session_id)
        out: list[Stored] = []
        reading = self._bus.read(subjects.SESSIONS_STREAM, subjects.session_log(session_id))
        async for msg in reading:
            stored = decoded(msg.seq, msg.data)
            state.apply(stored.typed, msg.seq)
            out.append(stored)
        state.last_seq = max(state.last_seq, reading.tail_seq)
        async with self._lock(session_id):
            cached = self._cache.get(session_id)
            if cached is None or cached.last_seq <= state.last_seq:
                self._remember(state)
        return state, out

    @metrics.timed_append("sessions")
    async def append(
        self,
        session_id: str,
        decide: Decide,
        *,
        msg_ids: list[str | None] | None = None,
        expected_last_seq: int | None = None,
        new: bool = False,
        atomic: bool = True,
        check: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[SessionState, list[Stored]]:
        """Append what ``decide`` returns, in order, fenced on the subject's last sequence: all or
        none, or (not ``atomic``) one record at a time, each fenced on the one before.
        ``check`` runs before every decision, under the session's lock, and refuses by raising: the
        harness's lease, read after any append this store made before (a new holder's first one
        included) and again after another writer got in first.

        Records without ``id``/``processed_at`` that are public events get them here. Returns the
        state after the append and the stored records with their stream sequences. ``new`` says
        the session id was just minted, so there is no history to read (fencing still holds: the
        publish expects an empty subject).
        """
        subject = subjects.session_log(session_id)
        async with self._lock(session_id):
            for _ in range(_MAX_RACES):
                if check is not None:
                    await check()
                state = self._cache.get(session_id)
                cached = state is not None
                if state is None:
                    state = SessionState(session_id=session_id) if new else await self._load(session_id)
                new = False
                try:
                    # A caller may expect the raw tail or the last whole record (before an abandoned part).
                    if expected_last_seq is not None and expected_last_seq not in (state.last_seq, state.record_seq):
                        raise conflict(
                            f"session {session_id!r} log is at sequence {state.last_seq}, not {expected_last_seq}",
                            error_code="wrong_last_sequence",
                        )
                    records = decide(state)
                except ApiError:
                    # Refused on the cached state: another session-store may have written since.
                    # Refuse only on the state as the log has it now.
                    if cached and await self._bus.last_seq(subjects.SESSIONS_STREAM, subject) != state.last_seq:
                        self._cache.pop(session_id, None)
                        continue
                    raise
                try:
                    stored = await self._publish_all(subject, state, records, msg_ids, atomic=atomic)
                except WrongLastSequence as exc:
                    self._cache.pop(session_id, None)  # someone else wrote: reload and decide again
                    if isinstance(exc, PartlyStored) and not atomic:
                        # decided again, the prefix already stored would be checked a second time
                        raise conflict(
                            f"session {session_id!r}: another writer got in after {exc.stored} of the "
                            f"{len(records)} records of this append; read the log and append what it lacks",
                            error_code="append_interrupted",
                        ) from None
                    if expected_last_seq is not None:
                        raise conflict(
                            f"session {session_id!r} log moved past sequence {expected_last_seq}",
                            error_code="wrong_last_sequence",
                        ) from None
                    continue
                self._remember(state)
                return state, stored
        raise conflict(f"session {session_id!r} is being written too fast; retry", error_code="append_contention")

    async def _publish_all(
        self,
        subject: str,
        state: SessionState,
        records: list[dict[str, Any]],
        msg_ids: list[str | None] | None,
        *,
        atomic: bool,
    ) -> list[Stored]:
        """Store ``records`` fenced on ``state.last_seq``: in one atomic batch, all of them or none;
        or (not ``atomic``) one at a time."""
        batch: list[OutgoingRecord] = []
        typed: list[SessionRecord] = []
        for i, record in enumerate(records):
            if "type" in record and not record["type"].startswith("corral."):
                record.setdefault("id", ids.new_id(ids.EVENT))
                record["processed_at"] = now_rfc3339()
            msg_id = (msg_ids[i] if msg_ids and i < len(msg_ids) else None) or record.get("id")
            parsed = parse_session_record(record)  # a record no reader could load is never written
            typed.append(parsed)
            # readers of headers only (sandbox releases) need no body
            batch.append(OutgoingRecord(encode(record), {h.RECORD_TYPE: parsed.type}, msg_id))
        acks = await self._bus.publish_batch(subject, batch, expected_last_subject_seq=state.last_seq, atomic=atomic)
        stored: list[Stored] = []
        for record, parsed, ack in zip(records, typed, acks, strict=True):
            if ack.duplicate:
                # Stored before (a retried append): report what the log holds, not what we built.
                original = await self._bus.get(subjects.SESSIONS_STREAM, ack.seq)
                stored.append(decoded(ack.seq, original.data))
                continue
            state.apply(parsed, ack.seq)
            stored.append(Stored(ack.seq, record, parsed))
            self.high_water = max(self.high_water, ack.seq)
        return stored

    async def tail(self, session_id: str) -> int:
        """The session's last whole record's stream sequence as the stream has it now.

        A reader may have seen an event on a live stream before this store got the ack for it, so
        reads that must include "what the client saw" wait for this, not the cached state. A record
        being written (or abandoned) in parts is not there yet: the tail is the record before it.
        """
        subject = subjects.session_log(session_id)
        last = await self._bus.last_record_seq(subjects.SESSIONS_STREAM, subject)
        if last is None:
            return (await self.state(session_id)).record_seq
        return last

    def forget(self, session_id: str) -> None:
        self._cache.pop(session_id, None)


class Catalog:
    """Agents, environments, vaults, workspaces and API keys: one subject per object, fenced per
    subject. A record of any size is stored (an agent with a system prompt of megabytes): the bus stores it in parts."""

    def __init__(self, bus: Bus, caches: Sequence[CatalogCache[Any]] = ()) -> None:
        self._bus = bus
        self._caches = tuple(caches)
        """Told of every record this store appends, before the append is answered."""

    async def api_key(self, key_sha256: str) -> ApiKey | None:
        """The key with this hash as it is now, read from the stream: the projection's fallback (a
        scan of every key's records)."""
        key_id: str | None = None
        key: ApiKey | None = None
        async for msg in self._bus.read(subjects.CATALOG_STREAM, subjects.API_KEYS_WILDCARD):
            record = API_KEY_RECORD_ADAPTER.validate_json(msg.data)
            if isinstance(record, ApiKeyCreated) and record.key_sha256 == key_sha256:
                key_id = record.key_id
            if key_id is not None and record.key_id == key_id:
                key = fold_api_key(key, record)
        return key

    @metrics.timed_append("catalog")
    async def append(
        self, subject: str, record: dict[str, Any], *, expected_last_seq: int | None, msg_id: str | None = None
    ) -> int:
        data = encode(record)
        try:
            try:
                ack = await self._bus.publish(subject, data, msg_id=msg_id, expected_last_subject_seq=expected_last_seq)
            except WrongLastSequence:
                # Only the parts of a record a crashed writer abandoned may follow the expected
                # record: then the object did not change, and the append goes after those parts.
                if expected_last_seq is None:
                    raise
                reading = self._bus.read(subjects.CATALOG_STREAM, subject, after_seq=expected_last_seq)
                if [m async for m in reading] or reading.tail_seq == expected_last_seq:
                    raise
                ack = await self._bus.publish(subject, data, msg_id=msg_id, expected_last_subject_seq=reading.tail_seq)
        except WrongLastSequence:
            raise conflict(
                "the object was changed concurrently; retrieve it again and retry", error_code="concurrent_update"
            ) from None
        for cache in self._caches:
            cache.saw(subject, ack.seq)
        return ack.seq
