"""Per-session leases in the JetStream KV bucket ``subjects.LEASE_BUCKET``.

Key: the session id. Value: ``{"holder", "token", "acquired_at"}`` JSON; the token is fresh per
acquisition and rides on every append, and the session-store checks it against the bucket, so a
holder that lost its lease can never append. Taking a lease is a ``create`` (it fails while someone
holds the key); keeping it is an ``update`` with the last revision every ``ttl/3``; giving it back
is a ``delete`` with the last revision. A failed compare-and-set, or no successful renewal for a
whole TTL (measured on the monotonic clock), means the lease is lost: ``HeldLease.lost`` is set and
the holder must stop at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from corral.bus import KeyChanged, KeyExists
from corral.contracts import clock, rpc
from corral.harness import metrics

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class LeaseBucket(Protocol):
    """The compare-and-set operations of ``corral.bus.KeyValueBucket`` that leases use."""

    async def create(self, key: str, value: bytes) -> int: ...

    async def update(self, key: str, value: bytes, *, last: int) -> int: ...

    async def delete(self, key: str, *, last: int) -> None: ...

    async def wait_gone(self, key: str, *, timeout_s: float) -> bool: ...


class LeaseBusy(Exception):
    """Another worker holds the session's lease."""


@dataclass
class HeldLease:
    session_id: str
    holder: str
    token: str
    revision: int
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    handed_off: bool = False
    """Taken after waiting for another holder to let it go (set by the wake loop)."""

    def proof(self) -> rpc.Lease:
        """What an append carries to show it comes from the lease holder."""
        return rpc.Lease(holder=self.holder, token=self.token)


class Leases:
    def __init__(
        self,
        bucket: LeaseBucket,
        *,
        holder: str,
        ttl_s: float,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bucket = bucket
        self._holder = holder
        self._ttl_s = ttl_s
        self._sleep = sleep
        self._monotonic = monotonic

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[HeldLease]:
        """Take the lease, keep it renewed while the block runs, release it on the way out.

        Raises:
            LeaseBusy: someone else holds it (raised before the block runs).
        """
        token = secrets.token_urlsafe(16)
        value = json.dumps({"holder": self._holder, "token": token, "acquired_at": clock.now_rfc3339()}).encode()
        try:
            revision = await self._bucket.create(session_id, value)
        except KeyExists:
            raise LeaseBusy(session_id) from None
        lease = HeldLease(session_id=session_id, holder=self._holder, token=token, revision=revision)
        try:
            async with asyncio.TaskGroup() as tg:
                renewer = tg.create_task(self._renew(lease, value), name=f"lease-renew-{session_id}")
                try:
                    yield lease
                finally:
                    renewer.cancel()
        finally:
            await self._release(lease)

    async def wait_released(self, session_id: str, *, timeout_s: float) -> bool:
        """Wait (watching the key) until nobody holds the session's lease, for at most ``timeout_s``
        and at most a tenth of the TTL: a lease that expires rather than being released leaves no
        mark a watch sees, so the caller tries to take it again at least that often."""
        try:
            return await self._bucket.wait_gone(session_id, timeout_s=min(timeout_s, self._ttl_s / 10))
        except Exception:
            logger.warning("could not watch the lease", extra={"fields": {"session_id": session_id}}, exc_info=True)
            await self._sleep(min(timeout_s, 0.5))
            return False

    async def _renew(self, lease: HeldLease, value: bytes) -> None:
        last_renewed = self._monotonic()
        while not lease.lost.is_set():
            await self._sleep(self._ttl_s / 3)
            try:
                lease.revision = await self._bucket.update(lease.session_id, value, last=lease.revision)
                last_renewed = self._monotonic()
            except KeyChanged:
                self._lose(lease, "the lease changed hands")
            except Exception:
                logger.warning(
                    "lease renewal failed", extra={"fields": {"session_id": lease.session_id}}, exc_info=True
                )
                if self._monotonic() - last_renewed >= self._ttl_s:
                    self._lose(lease, "no renewal succeeded for a whole TTL")

    def _lose(self, lease: HeldLease, why: str) -> None:
        logger.warning("lease lost: %s", why, extra={"fields": {"session_id": lease.session_id}})
        if not lease.lost.is_set():
            metrics.LEASES_LOST.inc()
        lease.lost.set()

    async def _release(self, lease: HeldLease) -> None:
        if lease.lost.is_set():
            return
        try:
            await self._bucket.delete(lease.session_id, last=lease.revision)
        except KeyChanged:
            logger.info("lease was already gone at release", extra={"fields": {"session_id": lease.session_id}})
        except Exception:
            logger.warning(
                "lease release failed; it expires with its TTL",
                extra={"fields": {"session_id": lease.session_id}},
                exc_info=True,
            )
