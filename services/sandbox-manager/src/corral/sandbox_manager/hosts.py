"""This manager as a sandbox host: its advertisement in ``SANDBOX_HOSTS_BUCKET`` and the placements
other hosts' sessions have (``corral.contracts.sandbox``, *Hosts*).

While the manager serves, ``advertise`` rewrites its ``SandboxHost`` entry (ready, sessions, capacity,
warm sandboxes, the credential-proxy its egress goes through) every ``SANDBOX_HOST_BEAT_S``; the entry
expires ``SANDBOX_HOST_TTL_S`` after the last write, so a host that died (killed, frozen, cut off from
NATS) stops being chosen without anyone deleting it. A clean stop deletes it at once. ``Placements``
reads where a session was placed: the release consumer, one for every manager, hands a session's
archive mark to whichever manager fetches it, which releases locally or forwards the release to the
session's host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from pydantic import ValidationError

from corral.bus import Bus, KeyValueBucket
from corral.contracts.sandbox import SANDBOX_HOST_BEAT_S, SandboxHost, SandboxPlacement
from corral.contracts.sandbox_hosts import sandbox_hosts_spec, sandbox_placements_spec

logger = logging.getLogger(__name__)


class HostBoard:
    """This host's entry in ``SANDBOX_HOSTS_BUCKET``, and the placements bucket."""

    def __init__(self, hosts: KeyValueBucket, placements: KeyValueBucket, host: str) -> None:
        self._hosts = hosts
        self._placements = placements
        self.host = host

    @classmethod
    async def open(cls, bus: Bus, host: str) -> HostBoard:
        return cls(
            await bus.ensure_key_value(sandbox_hosts_spec()),
            await bus.ensure_key_value(sandbox_placements_spec()),
            host,
        )

    async def advertise(self, describe: Callable[[], SandboxHost], *, every_s: float = SANDBOX_HOST_BEAT_S) -> None:
        """Rewrite this host's entry every ``every_s`` until cancelled; then delete it (a clean stop)."""
        try:
            while True:
                try:
                    await self._hosts.put(self.host, describe().model_dump_json().encode())
                except Exception as exc:  # the bus is reconnecting: the next beat tries again
                    logger.debug("host advertisement not written: %s", exc)
                await asyncio.sleep(every_s)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._hosts.delete(self.host)

    async def placement(self, session_id: str) -> SandboxPlacement | None:
        """Where ``session_id`` was placed, or ``None`` (never placed, or an unreadable entry)."""
        entry = await self._placements.get(session_id)
        if entry is None:
            return None
        try:
            return SandboxPlacement.model_validate_json(entry.value)
        except ValidationError:
            return None

    async def forget(self, session_id: str, host: str) -> None:
        """Drop the session's placement if it is still ``host`` (its sandbox was released there)."""
        entry = await self._placements.get(session_id)
        if entry is None:
            return
        try:
            placed = SandboxPlacement.model_validate_json(entry.value)
        except ValidationError:
            placed = None
        if placed is None or placed.host == host:
            with contextlib.suppress(Exception):
                await self._placements.delete(session_id, last=entry.revision)


def describe_host(
    host: str, instance: str, *, ready: bool, sessions: int, capacity: int, warm: int, egress_host: str = ""
) -> SandboxHost:
    return SandboxHost(
        host=host,
        instance=instance,
        ready=ready,
        sessions=sessions,
        capacity=capacity or None,
        warm=warm,
        egress_host=egress_host or None,
        at=time.time(),
    )
