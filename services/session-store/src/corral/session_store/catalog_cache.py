"""Agents and environments as the projection last showed them, kept in memory so a session create
reads no table: the agent and the environment it names are looked up on every create.

An entry is keyed by the object's catalog subject and remembers the catalog sequence of the record
it shows (the row's ``log_seq``). The cache learns of every later record from two places:

* this store's own catalog writes (``saw`` is called with the sequence the append was stored at,
  before the write is answered), so a session created here right after an agent update here sees
  the new version;
* an ordered consumer on ``CORRAL_CATALOG`` (``follow``, one for every cache), which sees every other store's writes a
  few milliseconds after they are stored.

A record newer than an entry drops it; a row read from Postgres is cached only if no newer record
of its object is known, so a read that raced a write never puts an older version back. While the
consumer is not following (at start, or after losing the bus), nothing is cached.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from corral.bus import Bus
from corral.contracts import subjects

logger = logging.getLogger(__name__)

_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 10.0

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    seq: int
    """The catalog sequence of the record the value shows."""
    value: T
    versions: dict[int, T] = field(default_factory=dict)
    """Earlier versions of the object (agents), which change only with the object (an archive)."""


class CatalogCache(Generic[T]):
    """The objects whose catalog subjects start with ``prefix`` (``subjects.agent_log("")``)."""

    def __init__(self, prefix: str, *, size: int = 4096) -> None:
        self._prefix = prefix
        self._entries: OrderedDict[str, Entry[T]] = OrderedDict()
        self._size = size
        self._latest: dict[str, int] = {}
        """The newest catalog sequence known of each subject under the prefix (an int per object)."""
        self._following = False

    def get(self, subject: str) -> Entry[T] | None:
        entry = self._entries.get(subject)
        if entry is not None:
            self._entries.move_to_end(subject)
        return entry

    def put(self, subject: str, seq: int, value: T) -> Entry[T] | None:
        """Cache ``value`` (the object at catalog sequence ``seq``) unless a newer record is known."""
        if not self._following or seq < self._latest.get(subject, 0):
            return None
        entry = self._entries.get(subject)
        if entry is None or entry.seq != seq:
            entry = self._entries[subject] = Entry(seq, value)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return entry

    def saw(self, subject: str, seq: int) -> None:
        """A record of ``subject`` was stored at ``seq``: forget what it makes stale."""
        if not subject.startswith(self._prefix):
            return
        if seq > self._latest.get(subject, 0):
            self._latest[subject] = seq
        entry = self._entries.get(subject)
        if entry is not None and entry.seq < seq:
            del self._entries[subject]

    def following(self, on: bool) -> None:
        """Whether the catalog is being followed: caching only then (stopping forgets every entry)."""
        self._following = on
        if not on:
            self._entries.clear()


async def follow(bus: Bus, caches: list[CatalogCache[Any]], *, after_seq: int) -> None:
    """Tell ``caches`` of every catalog record after ``after_seq``, until cancelled; while this is
    not following (retrying after an error), they cache nothing."""
    position = after_seq
    delay = _RETRY_MIN_S
    while True:
        try:
            for cache in caches:
                cache.following(True)
            async for msg in bus.follow(subjects.CATALOG_STREAM, subjects.CATALOG_WILDCARD, after_seq=position):
                for cache in caches:
                    cache.saw(msg.subject, msg.seq)
                position = msg.seq
                delay = _RETRY_MIN_S
        except Exception as exc:
            for cache in caches:
                cache.following(False)
            logger.warning(
                "catalog cache stopped following; not caching until it resumes",
                extra={"fields": {"error": f"{type(exc).__name__}: {exc}"[:300], "retry_in_s": delay}},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)
        finally:
            for cache in caches:
                cache.following(False)
