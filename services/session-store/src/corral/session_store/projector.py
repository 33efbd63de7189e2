"""Projects both streams into Postgres, in stream order, recording each stream's position in the
same transaction as the rows it wrote, so a message seen twice changes nothing.

Only one projector runs at a time (a Postgres advisory lock); it reads with an ordered consumer from
the recorded position. Command handlers wait on ``caught_up`` before they reply, so a client reads
its own writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from corral.bus import Bus, StoredMessage
from corral.contracts import subjects
from corral.contracts.clock import parse_rfc3339
from corral.contracts.log import (
    SessionArchived,
    SessionCreated,
    SessionDeleted,
    parse_catalog_record,
    parse_session_record,
)
from corral.session_store import metrics, pgtext
from corral.session_store.catalog_projection import apply_catalog_record
from corral.session_store.db import Conn
from corral.session_store.domain.sessions import SessionRow

logger = logging.getLogger(__name__)

_LOCK_KEY = 4242002
_BATCH = 512
_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 10.0

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


class Projector:
    def __init__(self, bus: Bus, pool: asyncpg.Pool) -> None:
        self._bus = bus
        self._pool = pool
        self._positions: dict[str, int] = {}
        self._moved = asyncio.Condition()
        self._failing = False
        #: Records skipped since start because they could not be projected, and the last one's error.
        self.errors = 0
        self.last_error = ""

    @property
    def failing(self) -> bool:
        """Whether the projection is stopped (its database unreachable) and retrying."""
        return self._failing

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
                    extra={"fields": {"error": f"{type(exc).__name__}: {exc}"[:300], "retry_in_s": delay}},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    async def _project(self) -> None:
        """Take the projection lock (waiting while a sibling store holds it) and follow both streams."""
        async with self._pool.acquire() as lock_conn:
            # Blocks while a sibling store holds the projection lock.
            await lock_conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
            try:
                rows = await lock_conn.fetch("SELECT stream, seq FROM projection_positions")
                async with self._moved:
                    for row in rows:
                        self._positions[row["stream"]] = row["seq"]
                    self._failing = False
                    self._moved.notify_all()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(
                        self._follow(subjects.CATALOG_STREAM, subjects.CATALOG_WILDCARD, self._apply_catalog)
                    )
                    tg.create_task(
                        self._follow(subjects.SESSIONS_STREAM, subjects.SESSIONS_WILDCARD, self._apply_sessions)
                    )
            finally:
                with contextlib.suppress(Exception):
                    await lock_conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)

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
                async with self._moved:
                    self._positions[stream] = batch[-1].seq
                    self._failing = False
                    self._moved.notify_all()

    async def _commit(self, stream: str, apply: Apply, batch: list[StoredMessage]) -> None:
        """Apply ``batch`` and record the position it reached, atomically."""
        async with self._pool.acquire() as conn:
            if stream == subjects.SESSIONS_STREAM:
                await self._commit_sessions(conn, batch)
                return
            async with conn.transaction():
                await apply(conn, batch)
                await _save_position(conn, stream, batch[-1].seq)

    async def _commit_sessions(self, conn: Conn, batch: list[StoredMessage]) -> None:
        """A batch of the session log: its events, the rows it changes and the position it reached.

        A batch that deletes nothing (nearly every one) is written by one statement, which Postgres
        runs as one transaction: one round trip instead of begin, each write and commit. A batch
        with a deletion takes a transaction, so the deletion never shares a snapshot with inserts
        of the same rows. Reading the rows a batch changes needs no transaction: only this
        projector (it holds the projection lock) writes them.
        """
        plan = await _plan_sessions(conn, batch)
        seq = batch[-1].seq
        if not plan.purged:
            await conn.execute(
                _SESSIONS_COMMIT,
                *_event_columns(plan.events),
                *_row_columns(list(plan.rows.values())),
                subjects.SESSIONS_STREAM,
                seq,
            )
            return
        async with conn.transaction():
            await _write_sessions(conn, plan)
            await _save_position(conn, subjects.SESSIONS_STREAM, seq)

    async def _skip(self, stream: str, msg: StoredMessage, exc: BaseException) -> None:
        """Record that ``msg`` could not be projected and move past it (its row alone stays behind)."""
        error = pgtext.key(f"{type(exc).__name__}: {exc}"[:500])
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO projection_errors (stream, seq, subject, error) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (stream, seq) DO UPDATE SET error = EXCLUDED.error, at = now()",
                stream, msg.seq, pgtext.key(msg.subject), error,
            )  # fmt: skip
            await _save_position(conn, stream, msg.seq)
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
        await _write_sessions(conn, await _plan_sessions(conn, batch))


EventRow = tuple[str, int, str, str, datetime, str]


@dataclass
class SessionsPlan:
    """What a batch of the session log writes: event rows, session rows, sessions to delete."""

    events: list[EventRow] = field(default_factory=list)
    rows: dict[str, SessionRow] = field(default_factory=dict)
    """Sessions to save (created ones with their rows as they are after the batch)."""
    purged: set[str] = field(default_factory=set)
    """Sessions whose rows and events are deleted."""


async def _plan_sessions(conn: Conn, batch: list[StoredMessage]) -> SessionsPlan:
    rows: dict[str, SessionRow] = {}
    events: list[EventRow] = []
    purged: set[str] = set()
    for msg in batch:
        session_id = subjects.session_id_of(msg.subject)
        record = parse_session_record(msg.data)  # decoded once, typed; the raw JSON only for an event's body
        row = rows.get(session_id)
        if row is None:
            fresh = isinstance(record, SessionCreated)
            row = SessionRow(session_id=session_id) if fresh else await load_row(conn, session_id)
            rows[session_id] = row
        if row.last_seq >= msg.seq:
            continue
        row.apply(record, msg.seq)
        match record:
            case SessionDeleted():
                purged.add(session_id)
                events = [e for e in events if e[0] != session_id]
            case SessionCreated() | SessionArchived():
                pass
            case _:  # a public event: its row shows it as it was stored (fields this reader ignores included)
                if record.processed_at is None:
                    raise ValueError(f"event {record.id} has no processed_at: the store stamps every event")
                processed = parse_rfc3339(record.processed_at)
                body = pgtext.dump(json.loads(msg.data))
                events.append((session_id, msg.seq, record.id, record.type, processed, body))
    purged |= {session_id for session_id, row in rows.items() if row.deleted}
    saved = {
        session_id: row for session_id, row in rows.items() if session_id not in purged and row.created_at is not None
    }
    return SessionsPlan(events=events, rows=saved, purged=purged)


async def _write_sessions(conn: Conn, plan: SessionsPlan) -> None:
    """``plan``'s writes, one statement each, inside the caller's transaction."""
    if plan.events:
        await conn.executemany(
            "INSERT INTO events (session_id, seq, event_id, type, processed_at, body) "
            "VALUES ($1, $2, $3, $4, $5, $6) "
            "ON CONFLICT (session_id, seq) DO NOTHING",
            plan.events,
        )
    for session_id in plan.purged:
        await conn.execute("DELETE FROM events WHERE session_id = $1", session_id)
        await conn.execute("DELETE FROM sessions WHERE session_id = $1", session_id)
    for row in plan.rows.values():
        await save_row(conn, row)


_SESSION_UPSERT = (
    "ON CONFLICT (session_id) DO UPDATE SET status = EXCLUDED.status, archived_at = EXCLUDED.archived_at, "
    "running_since = EXCLUDED.running_since, active_seconds = EXCLUDED.active_seconds, "
    "input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens, "
    "cache_read_input_tokens = EXCLUDED.cache_read_input_tokens, "
    "cache_creation_input_tokens = EXCLUDED.cache_creation_input_tokens, last_seq = EXCLUDED.last_seq, "
    "body = EXCLUDED.body"
)

#: A batch of the session log as one statement: its events, its session rows and the position,
#: each column an array parameter. Postgres runs a statement as one transaction (atomic), so the
#: rows and the position it reached are stored together or not at all.
_SESSIONS_COMMIT = (
    "WITH new_events AS ("
    "INSERT INTO events (session_id, seq, event_id, type, processed_at, body) "
    "SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[], $6::text[]) "
    "ON CONFLICT (session_id, seq) DO NOTHING), "
    "saved AS ("
    "INSERT INTO sessions (session_id, workspace_id, agent_id, agent_version, status, created_at, archived_at, "
    "running_since, active_seconds, input_tokens, output_tokens, cache_read_input_tokens, "
    "cache_creation_input_tokens, last_seq, body) "
    "SELECT * FROM unnest($7::text[], $8::text[], $9::text[], $10::integer[], $11::text[], $12::timestamptz[], "
    "$13::timestamptz[], $14::timestamptz[], $15::double precision[], $16::bigint[], $17::bigint[], "
    "$18::bigint[], $19::bigint[], $20::bigint[], $21::text[]) "
    f"{_SESSION_UPSERT}) "
    "INSERT INTO projection_positions (stream, seq) VALUES ($22, $23) "
    "ON CONFLICT (stream) DO UPDATE SET seq = EXCLUDED.seq"
)


def _event_columns(events: list[EventRow]) -> list[list[Any]]:
    return [list(column) for column in zip(*events, strict=True)] if events else [[] for _ in range(6)]


def _row_values(row: SessionRow) -> tuple[Any, ...]:
    agent = row.body.get("agent") or {}
    return (
        row.session_id, row.workspace_id, agent.get("id", ""), int(agent.get("version") or 0), row.status,
        row.created_at, row.archived_at, row.running_since, row.active_seconds, row.input_tokens,
        row.output_tokens, row.cache_read_input_tokens, row.cache_creation_input_tokens, row.last_seq,
        pgtext.dump(row.body),
    )  # fmt: skip


def _row_columns(rows: list[SessionRow]) -> list[list[Any]]:
    if not rows:
        return [[] for _ in range(15)]
    return [list(column) for column in zip(*(_row_values(r) for r in rows), strict=True)]


async def _save_position(conn: Conn, stream: str, seq: int) -> None:
    await conn.execute(
        "INSERT INTO projection_positions (stream, seq) VALUES ($1, $2) "
        "ON CONFLICT (stream) DO UPDATE SET seq = EXCLUDED.seq",
        stream,
        seq,
    )


_ROW_COLUMNS = (
    "session_id, workspace_id, agent_id, agent_version, status, created_at, archived_at, running_since, "
    "active_seconds, input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens, last_seq, body"
)


async def load_row(conn: Conn, session_id: str) -> SessionRow:
    r = await conn.fetchrow(f"SELECT {_ROW_COLUMNS} FROM sessions WHERE session_id = $1", session_id)
    return row_from_record(r) if r is not None else SessionRow(session_id=session_id)


def row_from_record(r: asyncpg.Record) -> SessionRow:
    return SessionRow(
        session_id=r["session_id"],
        workspace_id=r["workspace_id"],
        body=pgtext.load(r["body"]),
        status=r["status"],
        created_at=r["created_at"],
        archived_at=r["archived_at"],
        running_since=r["running_since"],
        active_seconds=r["active_seconds"],
        input_tokens=r["input_tokens"],
        output_tokens=r["output_tokens"],
        cache_read_input_tokens=r["cache_read_input_tokens"],
        cache_creation_input_tokens=r["cache_creation_input_tokens"],
        last_seq=r["last_seq"],
    )


async def save_row(conn: Conn, row: SessionRow) -> None:
    await conn.execute(
        f"INSERT INTO sessions ({_ROW_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) "
        + _SESSION_UPSERT,
        *_row_values(row),
    )
