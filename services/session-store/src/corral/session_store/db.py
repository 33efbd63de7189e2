"""The Postgres pool, and the migrations applied at start-up (in order, once each)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from importlib import resources

import asyncpg

logger = logging.getLogger(__name__)

Pool = asyncpg.Pool

#: What a lost or unreachable database raises: the store answers from the log where it can, and
#: otherwise says the database is unavailable (never a bare internal error). ``InternalClientError``
#: is asyncpg's word for a connection found in a state it cannot go on from, seen on a pooled
#: connection right after Postgres was killed and restarted ("cannot switch to state 12; another
#: operation (2) is in progress"): asking again gets another connection.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InternalClientError,
)
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return connections to the pool as they are: Corral keeps no session state on them (no
    LISTEN, prepared cursors or SETs), so asyncpg's default reset would be a wasted round trip."""


@contextlib.asynccontextmanager
async def open_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> AsyncIterator[Pool]:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        reset=_keep_session,
        # Every table is a projection of the JetStream log and each commit records the stream
        # position it reached: a crash that loses the last commits only makes the projector replay
        # them, so commits need not wait for the WAL flush.
        server_settings={"synchronous_commit": "off"},
    )
    try:
        yield pool
    finally:
        await pool.close()


async def migrate(pool: Pool) -> None:
    """Apply every ``migrations/NNNN_*.sql`` not yet recorded, each in its own transaction."""
    files = sorted(
        (f for f in resources.files("corral.session_store.migrations").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    async with pool.acquire() as conn:
        # Under the lock, the table too: two stores starting at once on an empty database both ran
        # CREATE TABLE IF NOT EXISTS, and one failed on the catalog's unique index (Postgres checks
        # "if not exists" before it takes the name, not atomically with it).
        await conn.execute("SELECT pg_advisory_lock(4242001)")
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            for f in files:
                if f.name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f.read_text())
                    await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", f.name)
                logger.info("applied migration", extra={"fields": {"migration": f.name}})
        finally:
            await conn.execute("SELECT pg_advisory_unlock(4242001)")
