"""A JetStream key-value bucket with compare-and-set, as used for harness leases and service records."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Literal

from nats.js import JetStreamContext, api
from nats.js import errors as js_errors
from nats.js.api import RawStreamMsg
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from corral.bus.cancellation import honouring_cancel
from corral.bus.errors import KeyChanged, KeyExists, StreamUnavailable

_MARKER_REASON = "Nats-Marker-Reason"
"""The header of a mark the server leaves where an entry expired (buckets with ``expiry_marks``)."""

WATCH_IDLE_S = 5.0
"""How long the server keeps a watch's consumer once nothing subscribes to it (the watch was closed,
or its ordered consumer was replaced after a gap). nats-py asks for five minutes, so every closed
watch left a consumer behind that long: a lease wait per taken-over session, hundreds a minute."""


@dataclass(frozen=True)
class Entry:
    value: bytes
    revision: int


@dataclass(frozen=True)
class Change:
    """One change of a watched key: a value written, the key deleted, or its entry expired (the
    bucket's TTL, in a bucket with ``expiry_marks``; a purge looks the same)."""

    key: str
    kind: Literal["put", "delete", "expired"]
    value: bytes
    revision: int


def _gone(msg: RawStreamMsg) -> bool:
    """Whether the key's last message says it has no value: a delete, a purge or an expiry mark."""
    headers = msg.headers or {}
    return headers.get(KV_OP) in (KV_DEL, KV_PURGE) or _MARKER_REASON in headers


@contextlib.contextmanager
def _leader_needed(stream: str) -> Iterator[None]:
    """A write nobody answered (``NoStreamResponseError``: no leader during a cluster failover) as
    ``StreamUnavailable``, which callers can tell from a bug and answer with "retry shortly"."""
    try:
        yield
    except js_errors.NoStreamResponseError as exc:
        raise StreamUnavailable(stream) from exc


class KeyValueBucket:
    def __init__(self, kv: KeyValue, js: JetStreamContext, name: str, *, direct: bool) -> None:
        self._kv = kv
        self._js = js
        self._stream = f"KV_{name}"
        self._prefix = f"$KV.{name}."
        self._direct = direct

    async def _last(self, key: str, *, leader: bool = False) -> RawStreamMsg | None:
        """The key's last message, whatever it says (a value, a delete, an expiry mark)."""
        direct = self._direct and not leader
        try:
            return await honouring_cancel(self._js.get_msg(self._stream, subject=self._prefix + key, direct=direct))
        except js_errors.NotFoundError:
            return None

    async def get(self, key: str, *, leader: bool = False) -> Entry | None:
        """The key's value, or ``None`` when it has none (never set, deleted, purged or expired).

        On a replicated bucket any replica may answer, one still catching up included, so the value
        may be an older one; a writer's compare-and-set refuses what it decides on a stale value. With
        ``leader`` the bucket's stream leader answers: the value last written, at the cost of going
        to that one server."""
        msg = await self._last(key, leader=leader)
        if msg is None or _gone(msg) or msg.seq is None:
            return None
        return Entry(msg.data or b"", msg.seq)

    async def keys(self) -> list[str]:
        """Every key that currently has a value (deleted and purged keys are left out).

        Read from the stream's subjects (``STREAM.INFO`` with a subject filter) and each one's last
        message, not through a watch: nats-py's ``keys()`` makes a consumer the server keeps for five
        minutes after the listing, so a listing per tool call grew the stream's consumers without
        bound. The server answers with at most 100,000 subjects, more than any Corral bucket holds."""
        info = await honouring_cancel(self._js.stream_info(self._stream, subjects_filter=self._prefix + ">"))
        keys: list[str] = []
        for subject in sorted(info.state.subjects or {}):
            msg = await self._last(subject.removeprefix(self._prefix))
            if msg is not None and not _gone(msg):
                keys.append(subject.removeprefix(self._prefix))
        return keys

    async def put(self, key: str, value: bytes) -> int:
        """Write ``value`` whatever the key holds (last writer wins); the new revision."""
        with _leader_needed(self._stream):
            return await honouring_cancel(self._kv.put(key, value))

    async def create(self, key: str, value: bytes, *, gone_at: int | None = None) -> int:
        """Create ``key`` if it has no value (never set, deleted, purged or expired); raises
        ``KeyExists`` otherwise.

        ``gone_at``: the revision of a delete mark the caller believes is still the key's last message
        (what its own ``delete`` returned; never a value's revision, which this would overwrite).
        Tried first, so taking back a key this caller let go is one write, not the three a deleted
        key otherwise takes (a write expecting no message, a lookup, the write); a mark written over
        since costs one refused write and then the lookup."""
        try:
            with _leader_needed(self._stream):
                return await honouring_cancel(self._kv.update(key, value, last=gone_at or 0))
        except js_errors.KeyWrongLastSequenceError:
            pass
        # The key has a last message: a value, or a mark saying it has none (nats-py's own ``create``
        # takes a delete mark for a value-less key but not the server's expiry mark).
        last = await self._last(key)
        if last is None or not _gone(last) or last.seq is None:
            raise KeyExists(key)
        try:
            with _leader_needed(self._stream):
                return await honouring_cancel(self._kv.update(key, value, last=last.seq))
        except js_errors.KeyWrongLastSequenceError as exc:
            raise KeyExists(key) from exc

    async def update(self, key: str, value: bytes, *, last: int) -> int:
        """Replace the value if its revision is still ``last``; raises ``KeyChanged`` otherwise."""
        try:
            with _leader_needed(self._stream):
                return await honouring_cancel(self._kv.update(key, value, last=last))
        except js_errors.KeyWrongLastSequenceError as exc:
            raise KeyChanged(key) from exc

    async def delete(self, key: str, *, last: int | None = None, note: bytes = b"") -> int:
        """Delete ``key`` (if its revision is still ``last``, when given; ``KeyChanged`` otherwise);
        the delete mark's revision (for ``create(..., gone_at=)``).
        ``note``: the delete mark's body, which a watch sees as the ``delete`` change's ``value``,
        also a watch that starts after the delete (the mark is then the key's present state); the
        key has no value all the same."""
        headers = {KV_OP: KV_DEL}
        if last:
            headers[api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(last)
        try:
            with _leader_needed(self._stream):
                ack = await honouring_cancel(self._js.publish(self._prefix + key, note, headers=headers))
        except js_errors.APIError as exc:
            if exc.err_code in (10071, 10164):
                raise KeyChanged(key) from exc
            raise
        return int(ack.seq)

    async def changes(self, keys: str = ">", *, current: bool = True) -> AsyncIterator[Change]:
        """The changes of ``keys`` (a key, or a pattern such as ``>``) as they happen, until the
        iterator is closed; with ``current``, first each key's present state (its value, or the
        mark that says it has none). An expiry is seen only in a bucket with ``expiry_marks``."""
        watcher = await honouring_cancel(self._kv.watch(keys, inactive_threshold=WATCH_IDLE_S), undo=_stop_watching)
        live = current
        try:
            async for entry in watcher:
                if entry is None:  # every key's present state has been delivered
                    live = True
                    continue
                if not live or entry.revision is None:
                    continue
                kind: Literal["put", "delete", "expired"] = (
                    "delete" if entry.operation == KV_DEL else "expired" if entry.operation == KV_PURGE else "put"
                )
                yield Change(entry.key, kind, entry.value or b"", entry.revision)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]


async def _stop_watching(watcher: KeyValue.KeyWatcher) -> None:
    await watcher.stop()  # type: ignore[no-untyped-call]
