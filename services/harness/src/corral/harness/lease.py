"""Per-session leases in the JetStream KV bucket ``subjects.LEASE_BUCKET``.

Key: the session id. Value: ``{"holder", "token", "acquired_at"}`` JSON; the token is fresh per
acquisition and rides on every append, and the session-store checks it against the bucket, so a
holder that lost its lease can never append. Taking a lease is a ``create`` (it fails while someone
holds the key); keeping it is an ``update`` with the last revision every ``ttl/3``; giving it back
is a ``delete`` with the last revision. A failed compare-and-set, or no successful renewal for a
whole TTL (measured on the monotonic clock), means the lease is lost: ``HeldLease.lost`` is set and
the holder must stop at once.

Letting go of a session that has nothing left to do is one write: the key is deleted with a note
naming the log position everything was done up to (``{"holder", "released_through"}``, the delete
mark's body). A worker waiting for the lease with a wake-up (``await_release``) reads it: a wake-up
for input at or before that position was served by the holder, and for input after it the holder
itself looks at the log again right after the release and takes the session back (``WakeLoop``), so
the waiter leaves it that long before taking it. The note is on the delete itself, not on a value
written before it, because the mark stays the key's present state: a waiter whose watch starts only
after the release (its ``create`` failed a moment before) still reads it, where a value written
before the delete would be gone and the waiter would take the session from a holder about to take it
back. A lease that expires (its holder died) leaves the bucket's expiry mark
(``KeyValueSpec.expiry_marks``), which waiters and the takeover watch see at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from corral.bus import Change, KeyChanged, KeyExists
from corral.contracts import clock, rpc
from corral.harness import metrics

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

#: How many sessions' last delete marks a worker remembers (``Leases._let_go``): a few bytes each.
_LET_GO_KEPT = 4096


class LeaseBucket(Protocol):
    """The compare-and-set operations of ``corral.bus.KeyValueBucket`` that leases use."""

    async def create(self, key: str, value: bytes, *, gone_at: int | None = None) -> int: ...

    async def update(self, key: str, value: bytes, *, last: int) -> int: ...

    async def delete(self, key: str, *, last: int, note: bytes = b"") -> int: ...

    def changes(self, keys: str = ">", *, current: bool = True) -> AsyncIterator[Change]: ...


@dataclass(frozen=True)
class Released:
    """What a wait for another holder's lease ended with (``Leases.await_release``)."""

    kind: Literal["free", "served", "busy"]
    over: int | None = None
    """With ``free``: the expired entry's revision, to take the lease over from."""
    expired: bool = False
    """With ``free``: the lease expired (its holder stopped renewing it: died or cut off), rather
    than being let go; what follows is a takeover, not a hand-off."""


class _Feed:
    """A watch's changes, each waited for with a timeout without ending the watch (a cancelled
    ``anext`` would close the generator): the pending read is kept across timeouts."""

    def __init__(self, changes: AsyncIterator[Change]) -> None:
        self._changes = changes
        self._upcoming: asyncio.Future[Change] | None = None

    async def __aenter__(self) -> _Feed:
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._upcoming is not None:
            self._upcoming.cancel()
            with contextlib.suppress(BaseException):
                await self._upcoming
        await self._changes.aclose()  # type: ignore[attr-defined]

    async def next(self, timeout_s: float | None) -> Change | None:
        """The next change, or ``None`` if none came within ``timeout_s``."""
        if self._upcoming is None:
            self._upcoming = asyncio.ensure_future(anext(self._changes))
        await asyncio.wait({self._upcoming}, timeout=None if timeout_s is None else max(0.0, timeout_s))
        if not self._upcoming.done():
            return None
        upcoming, self._upcoming = self._upcoming, None
        return upcoming.result()


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


class LeaseUnavailable(Exception):
    """The lease could not be taken because the bucket did not answer (a timeout, no leader): whether
    the write landed is not known. A write that did land expires after the TTL like any other."""


@dataclass
class HeldLease:
    session_id: str
    holder: str
    token: str
    revision: int
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    handed_off: bool = False
    """Taken after waiting for another holder (set by the wake loop)."""
    after_expiry: bool = False
    """With ``handed_off``: the wait ended with the holder's lease expiring (it died or was cut
    off), not with the holder letting it go: a takeover."""
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
        #: the revision of the delete mark this worker left at each session's last release here: a
        #: session's next turn is mostly taken by the worker that ran its last one, and taking the
        #: lease over that mark is one write (``KeyValueBucket.create``'s ``gone_at``)
        self._let_go: OrderedDict[str, int] = OrderedDict()

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str, *, over: int | None = None) -> AsyncIterator[HeldLease]:
        """Take the lease, keep it renewed while the block runs, release it on the way out. With
        ``over``, the revision of a lease that expired (``expiries``) and that the server may not
        have removed yet: taken by replacing exactly that entry.

        Raises:
            LeaseBusy: someone else holds it (raised before the block runs).
            LeaseUnavailable: the bucket did not answer the write that takes it.
        """
        token = secrets.token_urlsafe(16)
        value = json.dumps({"holder": self._holder, "token": token, "acquired_at": clock.now_rfc3339()}).encode()
        gone_at = self._let_go.pop(session_id, None)
        try:
            if over is None:
                revision = await self._bucket.create(session_id, value, gone_at=gone_at)
            else:
                revision = await self._bucket.update(session_id, value, last=over)
        except (KeyExists, KeyChanged):
            raise LeaseBusy(session_id) from None
        except Exception as exc:
            raise LeaseUnavailable(session_id) from exc
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

        - ``Released("served")``: the holder let go saying it had done everything up to ``wake_seq``
          or later;
        - ``Released("free", over)``: the lease expired (``over``: the revision no one renewed for a
          TTL since this watch saw it written, to take it over from), was deleted without such a
          word, or was let go through a position before ``wake_seq`` and not taken back within
          ``recheck_grace_s`` (the holder takes it back at once when it sees the input after
          releasing, so this means it died);
        - ``Released("busy")``: still held when the time ran out (or the watch failed).

        The release read may be the key's present state when the watch starts (it was let go since
        the caller's ``create`` failed): it says the same then.
        """
        loop = asyncio.get_running_loop()  # deadlines on the clock the waits are timed with
        end = loop.time() + timeout_s
        revision: int | None = None
        expires_at: float | None = None
        grace_until: float | None = None
        try:
            async with _Feed(self._bucket.changes(session_id)) as feed:
                while True:
                    now = loop.time()
                    if grace_until is not None and now >= grace_until:
                        return Released("free")
                    if expires_at is not None and now >= expires_at:
                        return Released("free", over=revision, expired=True)  # its holder stopped renewing it
                    if now >= end:
                        return Released("busy")
                    change = await feed.next(min(t for t in (end, expires_at, grace_until) if t is not None) - now)
                    if change is None:
                        continue
                    if change.kind == "expired":
                        return Released("free", expired=True)
                    if change.kind == "put":  # held (again)
                        revision, expires_at, grace_until = change.revision, loop.time() + self._ttl_s, None
                        continue
                    released_through = _released_through(change.value)
                    if released_through is None:  # deleted, not by a holder that looks again
                        return Released("free")
                    if released_through >= wake_seq:
                        return Released("served")
                    # The holder looks at the log again: leave it the time to take the session back.
                    revision, expires_at, grace_until = None, None, loop.time() + self.recheck_grace_s
        except Exception:
            logger.warning("could not watch the lease", extra={"fields": {"session_id": session_id}}, exc_info=True)
            await self._sleep(min(timeout_s, 0.5))
            return Released("busy")

    async def expiries(self) -> AsyncIterator[Expired]:
        """The sessions whose lease expires from now on (its holder stopped renewing it: it died or
        was cut off), as soon as it does. Each lease write seen is given a deadline of one TTL from
        when it was seen here (never earlier than the server's own, whatever the clocks say); a
        lease neither renewed nor let go by then is expired, with the revision to take it over
        from (``hold(..., over=)``). The server's expiry mark (its expiry timer is coarse, so it
        usually comes later) is passed on too, with no revision, for a lease this watch saw
        written (the mark a deleted key's tombstone leaves when it ages out is not an expiry)."""
        deadlines: dict[str, tuple[int, float]] = {}
        loop = asyncio.get_running_loop()
        async with _Feed(self._bucket.changes(current=True)) as feed:
            while True:
                due = min((at for _, at in deadlines.values()), default=None)
                change = await feed.next(None if due is None else due - loop.time())
                if change is not None:
                    if change.kind == "put":
                        deadlines[change.key] = (change.revision, loop.time() + self._ttl_s)
                    elif deadlines.pop(change.key, None) is not None and change.kind == "expired":
                        yield Expired(change.key, None)
                now = loop.time()
                for key, (revision, at) in list(deadlines.items()):
                    if at <= now:
                        del deadlines[key]
                        yield Expired(key, revision)

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
        if not lease.lost.is_set():
            metrics.LEASES_LOST.inc()
        lease.lost.set()

    async def _release(self, lease: HeldLease) -> None:
        if lease.lost.is_set():
            return
        note = b""
        if lease.settled_through is not None:
            note = json.dumps({"holder": self._holder, "released_through": lease.settled_through}).encode()
        try:
            mark = await self._bucket.delete(lease.session_id, last=lease.revision, note=note)
        except KeyChanged:
            logger.info("lease was already gone at release", extra={"fields": {"session_id": lease.session_id}})
        except Exception:
            logger.warning(
                "lease release failed; it expires with its TTL",
                extra={"fields": {"session_id": lease.session_id}},
                exc_info=True,
            )
        else:
            self._let_go[lease.session_id] = mark
            while len(self._let_go) > _LET_GO_KEPT:
                self._let_go.popitem(last=False)
