"""Projects both streams into Postgres, in stream order, recording each stream's position in the
same transaction as the rows it wrote, so a message seen twice changes nothing.

Only one projector runs at a time (a Postgres advisory lock); it reads with an ordered consumer from
the recorded position. Command handlers wait on ``caught_up`` before they reply, so a client reads
its own writes. A store waiting for the lock follows the positions the projecting store commits
(each commit notifies them), so its handlers' ``caught_up`` answers as promptly as the projecting
store's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from corral.bus import Bus, StoredMessage
from corral.contracts import subjects
from corral.contracts.log import (
    parse_catalog_record,
)
from corral.session_store import metrics, pgtext
from corral.session_store.catalog_projection import apply_catalog_record
from corral.session_store.db import Conn
from corral.session_store.session_projection import (
    POSITION_CHANNEL,
    SESSIONS_COMMIT,
    KeptRows,
    event_columns,
    parse_position,
    plan_sessions,
    row_columns,
    save_position,
    write_sessions,
)

logger = logging.getLogger(__name__)

#: The Postgres advisory lock the projecting store holds (``pg_locks``: ``objid``; a fault test finds it there).
LOCK_KEY = 4242002
_BATCH = 512
_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 10.0
#: How often a store that does not project reads the committed positions again, besides hearing
#: each commit's notification (a safety net: notifications on a live connection are not lost).
_REREAD_S = 5.0

#: What a record can make projecting it raise that is the record's own fault (a value Postgres
#: cannot hold, a constraint or size limit it breaks, a field missing or malformed), as opposed to
#: the database being unreachable, full or misconfigured, which is retried and never skipped.
RECORD_FAULTS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
    ValueError,  # UnicodeError and pydantic's ValidationError among them
    TypeError,
    KeyError,
    AttributeError,
    OverflowError,
)

Apply = Callable[[Conn, list[StoredMessage]], Awaitable[None]]


def _describe(exc: BaseException) -> str:
    """What went wrong, the first failure inside task groups rather than the group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


class Projector:
    def __init__(self, bus: Bus, pool: asyncpg.Pool) -> None:
        self._bus = bus
        self._pool = pool
        self._positions: dict[str, int] = {}
        self._moved = asyncio.Condition()
        self._failing = False
        self._projecting = False
        self._rows = KeptRows()
        #: Records skipped since start because they could not be projected, and the last one's error.
        self.errors = 0
        self.last_error = ""

    @property
    def failing(self) -> bool:
        """Whether the projection is stopped (its database unreachable) and retrying."""
        return self._failing

    @property
    def projecting(self) -> bool:
        """Whether this store holds the projection lock (otherwise it follows the store that does)."""
        return self._projecting

    def position(self, stream: str) -> int:
        """The last sequence of ``stream`` the projection has applied."""
        return self._positions.get(stream, 0)

    async def caught_up(self, stream: str, seq: int, *, timeout: float = 5.0) -> None:
        """Wait until the projection has applied ``stream`` up to ``seq``.

        Raises:
            TimeoutError: not within ``timeout``, or at once while the projection is failing
                (its database is down): waiting would only delay the caller's fallback.
        """
        if self._failing and self._positions.get(stream, 0) < seq:
            raise TimeoutError("the projection is not running")
        async with asyncio.timeout(timeout), self._moved:
            await self._moved.wait_for(lambda: self._failing or self._positions.get(stream, 0) >= seq)
        if self._positions.get(stream, 0) < seq:
            raise TimeoutError("the projection stopped")

    async def run(self) -> None:
        """Project until cancelled; a lost database or bus connection is retried with backoff.

        Work resumes from the positions committed with the rows, so a failure mid-batch repeats
        nothing and loses nothing.
        """
        delay = _RETRY_MIN_S
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await self._project()
            except Exception as exc:
                async with self._moved:
                    self._failing = True
                    self._moved.notify_all()
                if asyncio.get_running_loop().time() - started > _RETRY_MAX_S:
                    delay = _RETRY_MIN_S
                logger.error(
                    "projection stopped; retrying",
                    extra={"fields": {"error": _describe(exc)[:300], "retry_in_s": delay}},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    async def _project(self) -> None:
        """Take the projection lock (following the positions a sibling store commits while it holds
        the lock) and follow both streams."""
        async with self._pool.acquire() as lock_conn:
            try:
                async with asyncio.TaskGroup() as tg:
                    following = tg.create_task(self._follow_projecting_store())
                    await lock_conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
                    following.cancel()
                rows = await lock_conn.fetch("SELECT stream, seq FROM projection_positions")
                await self._moved_to({row["stream"]: row["seq"] for row in rows})
                self._rows.clear()  # another store may have projected since this one last did
                self._projecting = True
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(
                        self._follow(subjects.CATALOG_STREAM, subjects.CATALOG_WILDCARD, self._apply_catalog)
                    )
                    tg.create_task(
                        self._follow(subjects.SESSIONS_STREAM, subjects.SESSIONS_WILDCARD, self._apply_sessions)
                    )
            finally:
                self._projecting = False
                with contextlib.suppress(Exception):
                    await lock_conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)

    async def _follow_projecting_store(self) -> None:
        """While a sibling store holds the projection lock: take the positions it commits as this
        store's, from each commit's notification (and a read of the table every ``_REREAD_S``), so a
        handler here waits only as long as the projection takes to show its write."""
        heard: asyncio.Queue[str] = asyncio.Queue()

        def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            heard.put_nowait(str(payload))

        async with self._pool.acquire() as conn:
            await conn.add_listener(POSITION_CHANNEL, on_notify)
            try:
                while True:  # listening before reading, so no commit between the two is missed
                    rows = await conn.fetch("SELECT stream, seq FROM projection_positions")
                    await self._moved_to({row["stream"]: row["seq"] for row in rows})
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_REREAD_S):
                            while True:
                                stream, seq = parse_position(await heard.get())
                                await self._moved_to({stream: seq})
            finally:
                with contextlib.suppress(Exception):
                    await conn.remove_listener(POSITION_CHANNEL, on_notify)  # the pool keeps no LISTEN

    async def _moved_to(self, positions: dict[str, int]) -> None:
        """The projection has committed ``positions`` (and so is running): wake the waiters."""
        async with self._moved:
            self._positions.update(positions)
            self._failing = False
            self._moved.notify_all()

    async def _follow(self, stream: str, wildcard: str, apply: Apply) -> None:
        queue: asyncio.Queue[StoredMessage] = asyncio.Queue(maxsize=10_000)

        async def reader() -> None:
            async for msg in self._bus.follow(stream, wildcard, after_seq=self._positions.get(stream, 0)):
                await queue.put(msg)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(reader())
            while True:
                batch = [await queue.get()]
                while len(batch) < _BATCH and not queue.empty():
                    batch.append(queue.get_nowait())
                batch = [m for m in batch if m.seq > self._positions.get(stream, 0)]
                if not batch:
                    continue
                try:
                    await self._commit(stream, apply, batch)
                except RECORD_FAULTS:
                    # Some record in the batch cannot be projected: find it by going one at a time,
                    # so every other record (and every other session) is projected as usual.
                    for msg in batch:
                        try:
                            await self._commit(stream, apply, [msg])
                        except RECORD_FAULTS as exc:
                            await self._skip(stream, msg, exc)
                await self._moved_to({stream: batch[-1].seq})

    async def _commit(self, stream: str, apply: Apply, batch: list[StoredMessage]) -> None:
        """Apply ``batch`` and record the position it reached, atomically."""
        async with self._pool.acquire() as conn:
            if stream == subjects.SESSIONS_STREAM:
                await self._commit_sessions(conn, batch)
                return
            async with conn.transaction():
                await apply(conn, batch)
                await save_position(conn, stream, batch[-1].seq)

    async def _commit_sessions(self, conn: Conn, batch: list[StoredMessage]) -> None:
        """A batch of the session log: its events, the rows it changes and the position it reached.

        A batch that deletes nothing (nearly every one) is written by one statement, which Postgres
        runs as one transaction: one round trip instead of begin, each write and commit. A batch
        with a deletion takes a transaction, so the deletion never shares a snapshot with inserts
        of the same rows. Reading the rows a batch changes needs no transaction: only this
        projector (it holds the projection lock) writes them.
        """
        try:
            plan = await plan_sessions(conn, batch, self._rows)
            seq = batch[-1].seq
            if not plan.purged:
                await conn.execute(
                    SESSIONS_COMMIT,
                    *event_columns(plan.events),
                    *row_columns(list(plan.rows.values())),
                    subjects.SESSIONS_STREAM,
                    seq,
                )
            else:
                async with conn.transaction():
                    await write_sessions(conn, plan)
                    await save_position(conn, subjects.SESSIONS_STREAM, seq)
        except BaseException:
            self._rows.forget(subjects.session_id_of(msg.subject) for msg in batch)
            raise
        self._rows.committed(plan)

    async def _skip(self, stream: str, msg: StoredMessage, exc: BaseException) -> None:
        """Record that ``msg`` could not be projected and move past it (its row alone stays behind)."""
        error = pgtext.key(f"{type(exc).__name__}: {exc}"[:500])
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO projection_errors (stream, seq, subject, error) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (stream, seq) DO UPDATE SET error = EXCLUDED.error, at = now()",
                stream, msg.seq, pgtext.key(msg.subject), error,
            )  # fmt: skip
            await save_position(conn, stream, msg.seq)
        self.errors += 1
        metrics.PROJECTION_ERRORS.inc()
        self.last_error = f"{stream} seq {msg.seq}: {error}"
        logger.error(
            "record not projected; skipped for its row only",
            extra={"fields": {"stream": stream, "subject": msg.subject, "seq": msg.seq, "error": error[:300]}},
        )

    # --- catalog -----------------------------------------------------------------------------------
    async def _apply_catalog(self, conn: Conn, batch: list[StoredMessage]) -> None:
        for msg in batch:
            # Decoded once, here; a message no Corral writer could have made (not JSON, an unknown type,
            # a field missing) raises ValidationError, a record fault: recorded and skipped.
            await apply_catalog_record(conn, parse_catalog_record(msg.data), msg.seq)

    # --- sessions ----------------------------------------------------------------------------------
    async def _apply_sessions(self, conn: Conn, batch: list[StoredMessage]) -> None:
        """Write ``batch`` of the session log (without the position: ``_commit_sessions`` does both)."""
        await write_sessions(conn, await plan_sessions(conn, batch))
