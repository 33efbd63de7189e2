"""What a batch of the session log writes to Postgres: its events, the session rows as they are
after it, the sessions it deletes, and the stream position it reached (one statement for a batch
that deletes nothing). Saving a position also announces it to the stores that do not project."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from corral.bus import StoredMessage
from corral.contracts import subjects
from corral.contracts.clock import parse_rfc3339
from corral.contracts.log import SessionArchived, SessionCreated, SessionDeleted, parse_session_record
from corral.session_store import pgtext
from corral.session_store.db import Conn
from corral.session_store.domain.sessions import SessionRow

EventRow = tuple[str, int, str, str, datetime, str]


@dataclass
class SessionsPlan:
    """What a batch of the session log writes: event rows, session rows, sessions to delete."""

    events: list[EventRow] = field(default_factory=list)
    rows: dict[str, SessionRow] = field(default_factory=dict)
    """Sessions to save (created ones with their rows as they are after the batch)."""
    purged: set[str] = field(default_factory=set)
    """Sessions whose rows and events are deleted."""


class KeptRows:
    """The session rows as the projector's last commits left them, the most recently used
    ``ROWS_KEPT``: a batch continuing one of them reads nothing from Postgres. Right only while
    the projector holds the projection lock (nothing else writes the rows): emptied when it takes
    the lock, and a batch's sessions are forgotten when its commit fails (``plan_sessions`` has
    applied the batch to their rows already)."""

    def __init__(self, size: int = 4096) -> None:
        self._rows: OrderedDict[str, SessionRow] = OrderedDict()
        self._size = size

    def get(self, session_id: str) -> SessionRow | None:
        row = self._rows.get(session_id)
        if row is not None:
            self._rows.move_to_end(session_id)
        return row

    def committed(self, plan: SessionsPlan) -> None:
        for session_id in plan.purged:
            self._rows.pop(session_id, None)
        for session_id, row in plan.rows.items():
            self._rows[session_id] = row
            self._rows.move_to_end(session_id)
        while len(self._rows) > self._size:
            self._rows.popitem(last=False)

    def forget(self, session_ids: Iterable[str]) -> None:
        for session_id in session_ids:
            self._rows.pop(session_id, None)

    def clear(self) -> None:
        self._rows.clear()


async def plan_sessions(conn: Conn, batch: list[StoredMessage], kept: KeptRows | None = None) -> SessionsPlan:
    """The batch's writes. The rows of the sessions it continues are taken from ``kept``, the
    others read in one query, not one per session: a batch under load holds records of many
    sessions. The rows are changed in place (a kept row too)."""
    # decoded once, typed; the raw JSON only for an event's body
    decoded = [(subjects.session_id_of(msg.subject), parse_session_record(msg.data), msg) for msg in batch]
    starts: dict[str, bool] = {}  # each session: whether the batch starts with its creation
    for session_id, record, _ in decoded:
        starts.setdefault(session_id, isinstance(record, SessionCreated))
    continued = [session_id for session_id, fresh in starts.items() if not fresh]
    rows = {session_id: row for session_id in continued if kept and (row := kept.get(session_id)) is not None}
    rows.update(await load_rows(conn, [session_id for session_id in continued if session_id not in rows]))
    rows.update({session_id: SessionRow(session_id=session_id) for session_id, fresh in starts.items() if fresh})
    events: list[EventRow] = []
    purged: set[str] = set()
    for session_id, record, msg in decoded:
        row = rows[session_id]
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


async def write_sessions(conn: Conn, plan: SessionsPlan) -> None:
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

#: The channel on which a commit of the projection announces the position it reached (payload
#: ``"<stream> <seq>"``, delivered when the transaction commits): a store that does not project
#: learns from it when its own writes are readable.
POSITION_CHANNEL = "corral_projection_position"

#: The end of a statement whose ``reached`` CTE saves a stream's position: it also notifies
#: ``POSITION_CHANNEL`` (in the same transaction, so only once the position is committed).
_POSITION_NOTIFY = (
    "ON CONFLICT (stream) DO UPDATE SET seq = EXCLUDED.seq RETURNING stream, seq) "
    f"SELECT pg_notify('{POSITION_CHANNEL}', stream || ' ' || seq) FROM reached"
)

#: A batch of the session log as one statement: its events, its session rows and the position,
#: each column an array parameter. Postgres runs a statement as one transaction (atomic), so the
#: rows and the position it reached are stored together or not at all.
SESSIONS_COMMIT = (
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
    f"{_SESSION_UPSERT}), "
    "reached AS (INSERT INTO projection_positions (stream, seq) VALUES ($22, $23) "
    f"{_POSITION_NOTIFY}"
)


def event_columns(events: list[EventRow]) -> list[list[Any]]:
    return [list(column) for column in zip(*events, strict=True)] if events else [[] for _ in range(6)]


def _row_values(row: SessionRow) -> tuple[Any, ...]:
    agent = row.body.get("agent") or {}
    return (
        row.session_id, row.workspace_id, agent.get("id", ""), int(agent.get("version") or 0), row.status,
        row.created_at, row.archived_at, row.running_since, row.active_seconds, row.input_tokens,
        row.output_tokens, row.cache_read_input_tokens, row.cache_creation_input_tokens, row.last_seq,
        pgtext.dump(row.body),
    )  # fmt: skip


def row_columns(rows: list[SessionRow]) -> list[list[Any]]:
    if not rows:
        return [[] for _ in range(15)]
    return [list(column) for column in zip(*(_row_values(r) for r in rows), strict=True)]


async def save_position(conn: Conn, stream: str, seq: int) -> None:
    """Record that ``stream`` is projected up to ``seq`` (and announce it on ``POSITION_CHANNEL``),
    inside the caller's transaction."""
    await conn.execute(
        f"WITH reached AS (INSERT INTO projection_positions (stream, seq) VALUES ($1, $2) {_POSITION_NOTIFY}",
        stream,
        seq,
    )


def parse_position(payload: str) -> tuple[str, int]:
    """The stream and position a ``POSITION_CHANNEL`` notification announces."""
    stream, _, seq = payload.partition(" ")
    return stream, int(seq)


_ROW_COLUMNS = (
    "session_id, workspace_id, agent_id, agent_version, status, created_at, archived_at, running_since, "
    "active_seconds, input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens, last_seq, body"
)


async def load_row(conn: Conn, session_id: str) -> SessionRow:
    r = await conn.fetchrow(f"SELECT {_ROW_COLUMNS} FROM sessions WHERE session_id = $1", session_id)
    return row_from_record(r) if r is not None else SessionRow(session_id=session_id)


async def load_rows(conn: Conn, session_ids: list[str]) -> dict[str, SessionRow]:
    """``load_row`` of each of ``session_ids``, in one query."""
    if not session_ids:
        return {}
    found = await conn.fetch(f"SELECT {_ROW_COLUMNS} FROM sessions WHERE session_id = ANY($1::text[])", session_ids)
    rows = {r["session_id"]: row_from_record(r) for r in found}
    return {session_id: rows.get(session_id) or SessionRow(session_id=session_id) for session_id in session_ids}


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
