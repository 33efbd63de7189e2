"""Which sandbox host runs a session's tools (``corral.contracts.sandbox``, *Hosts*).

``choose_host`` is the placement rule: among the hosts that advertise themselves ready and have room
(fewer sessions than their capacity), one with a warm sandbox first (a claim takes milliseconds, a cold
start hundreds), then the one with the most room left, then the fewest sessions; ties by host id, so
every caller picks alike from the same advertisements.

``Placements`` keeps the choice in ``SANDBOX_PLACEMENTS_BUCKET``: ``host_for`` returns the session's
host, placing it when it has none or when its host is gone (its advertisement expired, or the caller
found nothing serving its subject: ``moved_from``). Every write is compare-and-set, so concurrent
callers (the turn's provisioning and its first tool call, or two harness processes) end on the same
host. With no advertisement at all (the managers predate hosts, or none runs), it returns ``None``
and the caller uses the queue group, as a deployment of one host always did.

The advertisements are read at most once per ``HOSTS_FRESH_S`` by one caller at a time, however many
sessions dispatch tools at once: listing a bucket's keys costs a JetStream consumer, and a stream
takes at most 1,000 of them at once. An expired host can so be chosen for up to that long; a call to
it finds nothing serving its subject and moves on (``gone``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable

from pydantic import ValidationError

from corral.bus import Bus, KeyChanged, KeyExists, KeyValueBucket
from corral.contracts.sandbox import SandboxHost, SandboxPlacement
from corral.contracts.sandbox_hosts import sandbox_hosts_spec, sandbox_placements_spec

logger = logging.getLogger(__name__)

#: Compare-and-set attempts before a placement write gives up (another writer keeps winning).
ATTEMPTS = 8
#: How long one reading of the hosts' advertisements serves every caller (half their beat).
HOSTS_FRESH_S = 1.0


def room(host: SandboxHost) -> int | None:
    """Sessions ``host`` may still take (``None``: no limit)."""
    return None if host.capacity is None else host.capacity - host.sessions


def choose_host(hosts: Iterable[SandboxHost], *, exclude: Collection[str] = ()) -> SandboxHost | None:
    """The host a new sandbox should go to, or ``None`` when no host is ready with room."""
    candidates = [h for h in hosts if h.ready and h.host not in exclude and (room(h) is None or (room(h) or 0) > 0)]
    if not candidates:
        return None

    def rank(host: SandboxHost) -> tuple[bool, float, int, str]:
        left = room(host)
        return (host.warm <= 0, -(float("inf") if left is None else left), host.sessions, host.host)

    return min(candidates, key=rank)


class Placements:
    def __init__(
        self, bus: Bus, *, fresh_s: float = HOSTS_FRESH_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._bus = bus
        self._hosts: KeyValueBucket | None = None
        self._placements: KeyValueBucket | None = None
        self._fresh_s = fresh_s
        self._clock = clock
        self._reading = asyncio.Lock()
        self._read: tuple[float, dict[str, SandboxHost]] | None = None

    async def _buckets(self) -> tuple[KeyValueBucket, KeyValueBucket] | None:
        """Both buckets, bound once the sandbox-manager made them (``None`` until then)."""
        if self._hosts is None or self._placements is None:
            hosts = await self._bus.bind_key_value(sandbox_hosts_spec())
            placements = await self._bus.bind_key_value(sandbox_placements_spec())
            if hosts is None or placements is None:
                return None
            self._hosts, self._placements = hosts, placements
        return self._hosts, self._placements

    async def hosts(self) -> dict[str, SandboxHost]:
        """Every host advertising itself (expired advertisements are gone), as read at most
        ``fresh_s`` ago."""
        async with self._reading:
            if self._read is not None and self._clock() - self._read[0] < self._fresh_s:
                return dict(self._read[1])
            at = self._clock()
            found = await self._read_hosts()
            self._read = (at, found)
            return dict(found)

    async def _read_hosts(self) -> dict[str, SandboxHost]:
        buckets = await self._buckets()
        if buckets is None:
            return {}
        kv = buckets[0]
        found: dict[str, SandboxHost] = {}
        for key in await kv.keys():
            entry = await kv.get(key)
            if entry is None:
                continue
            try:
                found[key] = SandboxHost.model_validate_json(entry.value)
            except ValidationError:
                logger.warning("unreadable sandbox host advertisement", extra={"fields": {"host": key}})
        return found

    async def host_for(self, session_id: str, *, gone: Collection[str] = ()) -> str | None:
        """The host of ``session_id``'s sandbox, placing it now if it has none or its host is gone (no
        longer advertised, or in ``gone``); ``None``: no host advertises itself (use the queue group)."""
        buckets = await self._buckets()
        if buckets is None:
            return None
        kv = buckets[1]
        for _ in range(ATTEMPTS):
            entry = await kv.get(session_id)
            placed = _read(entry.value) if entry is not None else None
            live = await self.hosts()
            if placed is not None and placed.host not in gone and placed.host in live:
                return placed.host
            choice = choose_host(live.values(), exclude=gone)
            if choice is None:
                # nowhere better to go: keep the placement (the host may be back), or use the queue group
                return placed.host if placed is not None and placed.host not in gone else None
            record = SandboxPlacement(
                host=choice.host, previous=placed.host if placed is not None else None, at=time.time()
            )
            try:
                if entry is None:
                    await kv.create(session_id, record.model_dump_json().encode())
                else:
                    await kv.update(session_id, record.model_dump_json().encode(), last=entry.revision)
            except (KeyExists, KeyChanged):
                continue  # another caller placed it first: read theirs
            if placed is not None:
                logger.warning(
                    "session moved to another sandbox host: its host stopped answering",
                    extra={"fields": {"session_id": session_id, "from": placed.host, "to": choice.host}},
                )
            return choice.host
        raise KeyChanged(session_id)

    async def placed(self, session_id: str) -> str | None:
        """The host ``session_id`` is placed on, without placing it."""
        buckets = await self._buckets()
        if buckets is None:
            return None
        entry = await buckets[1].get(session_id)
        placed = _read(entry.value) if entry is not None else None
        return placed.host if placed is not None else None


def _read(value: bytes) -> SandboxPlacement | None:
    try:
        return SandboxPlacement.model_validate_json(value)
    except ValidationError:
        return None
