"""Per-session leases in the JetStream KV bucket ``subjects.LEASE_BUCKET``.

Key: the session id. Value: ``{"holder", "token", "acquired_at"}`` JSON; the token is fresh per
acquisition and rides on every append, and the session-store checks it against the bucket, so a
holder that lost its lease can never append. Taking a lease is a ``create`` (it fails while someone
holds the key); keeping it is an ``update`` with the last revision every ``ttl/3``; giving it back
is a ``delete`` with the last revision. A failed compare-and-set, or no successful renewal for a
whole TTL (measured on the monotonic clock), means the lease is lost: ``HeldLease.lost`` is set and
the holder must stop at once.

Letting go of a session that has nothing left to do is two writes: the value is replaced by one
naming the log position everything was done up to (``released_through``), then the key is deleted.
A worker waiting for the lease with a wake-up (``await_release``) reads that: a wake-up for input at
or before that position was served by the holder, and for input after it the holder itself looks
at the log again right after the release and takes the session back (``WakeLoop``), so the waiter
leaves it that long before taking it. A lease that expires (its holder died) leaves the bucket's
expiry mark (``KeyValueSpec.expiry_marks``), which waiters and the takeover watch see at once.
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
from typing import Literal, Protocol

from corral.bus import Change, KeyChanged, KeyExists
from corral.contracts import clock, rpc

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class LeaseBucket(Protocol):
    """The compare-and-set operations of ``corral.bus.KeyValueBucket`` that leases use."""

    async def create(self, key: str, value: bytes) -> int: ...

    async def update(self, key: str, value: bytes, *, last: int) -> int: ...

    async def delete(self, key: str, *, last: int) -> None: ...

    def changes(self, keys: str = ">", *, current: bool = True) -> AsyncIterator[Change]: ...


Released = Literal["free", "served", "busy"]


@dataclass(frozen=True)
class Expired:
    """A session whose lease expired; ``revision``: the expired entry, to take the lease over from
    (``None``: the server removed it already)."""

    session_id: str
    revision: int | None


def _released_through(value: bytes) -> int | None:
    try:
        found = json.loads(value).get("released_through")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, int) else None


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
    settled_through: int | None = None
    """Set by the run when a decision on the log up to this stream sequence found nothing to do: the
    release names it (``released_through``) so a waiting wake-up for input up to it is served."""

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
    async def hold(self, session_id: str, *, over: int | None = None) -> AsyncIterator[HeldLease]:
        """Take the lease, keep it renewed while the block runs, release it on the way out. With
        ``over``, the revision of a lease that expired (``expiries``) and that the server may not
        have removed yet: taken by replacing exactly that entry.

        Raises:
            LeaseBusy: someone else holds it (raised before the block runs).
        """
        token = secrets.token_urlsafe(16)
        value = json.dumps({"holder": self._holder, "token": token, "acquired_at": clock.now_rfc3339()}).encode()
        try:
            if over is None:
                revision = await self._bucket.create(session_id, value)
            else:
                revision = await self._bucket.update(session_id, value, last=over)
        except (KeyExists, KeyChanged):
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

    async def await_release(self, session_id: str, *, wake_seq: int, timeout_s: float) -> Released:
        """Wait, watching the key, until the session's lease is worth trying to take for a wake-up
        for input at ``wake_seq``, for at most ``timeout_s``:

        - ``"served"``: the holder let go saying it had done everything up to ``wake_seq`` or later;
        - ``"free"``: the lease expired, was deleted without such a word, or was let go through a
          position before ``wake_seq`` and not taken back within ``recheck_grace_s`` (the holder
          takes it back at once when it sees the input after releasing, so this means it died);
        - ``"busy"``: still held when the time ran out (or the watch failed).
        """
        released_through: int | None = None
        try:
            async with asyncio.timeout(timeout_s):
                changes = self._bucket.changes(session_id)
                try:
                    while True:
                        change = await anext(changes)
                        if change.kind == "expired":
                            return "free"
                        if change.kind == "put":
                            released_through = _released_through(change.value)
                            if released_through is not None and released_through >= wake_seq:
                                return "served"
                            continue
                        if released_through is None:  # deleted, not by a holder that looks again
                            return "free"
                        try:  # the holder looks at the log again; leave it the time to take it back
                            async with asyncio.timeout(self.recheck_grace_s):
                                change = await anext(changes)
                        except TimeoutError:
                            return "free"
                        if change.kind != "put":
                            return "free"
                        released_through = _released_through(change.value)
                finally:
                    await changes.aclose()  # type: ignore[attr-defined]
        except TimeoutError:
            return "busy"
        except Exception:
            logger.warning("could not watch the lease", extra={"fields": {"session_id": session_id}}, exc_info=True)
            await self._sleep(min(timeout_s, 0.5))
            return "busy"

    async def expiries(self) -> AsyncIterator[Expired]:
        """The sessions whose lease expires from now on (its holder stopped renewing it: it died or
        was cut off), as soon as it does. Each lease write seen is given a deadline of one TTL from
        when it was seen here (never earlier than the server's own, whatever the clocks say); a
        lease neither renewed nor let go by then is expired, with the revision to take it over
        from (``hold(..., over=)``). The server's expiry mark (its expiry timer is coarse, so it
        usually comes later) is passed on too, with no revision."""
        changes = self._bucket.changes(current=True)
        deadlines: dict[str, tuple[int, float]] = {}
        upcoming: asyncio.Future[Change] | None = None
        try:
            while True:
                if upcoming is None:
                    upcoming = asyncio.ensure_future(anext(changes))
                now = self._monotonic()
                due = min((at for _, at in deadlines.values()), default=None)
                await asyncio.wait({upcoming}, timeout=None if due is None else max(0.0, due - now))
                if upcoming.done():
                    change, upcoming = upcoming.result(), None
                    if change.kind == "put":
                        deadlines[change.key] = (change.revision, self._monotonic() + self._ttl_s)
                    else:
                        deadlines.pop(change.key, None)
                        if change.kind == "expired":
                            yield Expired(change.key, None)
                now = self._monotonic()
                for key, (revision, at) in list(deadlines.items()):
                    if at <= now:
                        del deadlines[key]
                        yield Expired(key, revision)
        finally:
            if upcoming is not None:
                upcoming.cancel()
                with contextlib.suppress(BaseException):
                    await upcoming
            await changes.aclose()  # type: ignore[attr-defined]

    @property
    def recheck_grace_s(self) -> float:
        """How long a waiter leaves a holder that let go to take the session back (it does so within
        milliseconds of releasing; past this it is taken for dead)."""
        return self._ttl_s / 3

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
        lease.lost.set()

    async def _release(self, lease: HeldLease) -> None:
        if lease.lost.is_set():
            return
        try:
            if lease.settled_through is not None:
                value = {"holder": self._holder, "token": lease.token, "released_through": lease.settled_through}
                lease.revision = await self._bucket.update(
                    lease.session_id, json.dumps(value).encode(), last=lease.revision
                )
            await self._bucket.delete(lease.session_id, last=lease.revision)
        except KeyChanged:
            logger.info("lease was already gone at release", extra={"fields": {"session_id": lease.session_id}})
        except Exception:
            logger.warning(
                "lease release failed; it expires with its TTL",
                extra={"fields": {"session_id": lease.session_id}},
                exc_info=True,
            )
