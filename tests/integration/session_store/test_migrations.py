"""Migrations on the real Postgres: session-stores starting together on an empty database."""

from __future__ import annotations

import asyncio

import asyncpg

from corral.session_store import db

ROUNDS = 10


async def _migrated(dsn: str) -> None:
    async with db.open_pool(dsn, min_size=1, max_size=2) as pool:
        await db.migrate(pool)


async def test_two_stores_migrating_an_empty_database_at_once_both_start(infra: tuple[str, str]) -> None:
    # Two session-stores of one stack started together: one failed on the catalog's unique index,
    # its CREATE TABLE IF NOT EXISTS racing the other's (the table was made before the lock was taken).
    _, dsn = infra  # this module's own Postgres: emptied before each round
    admin = await asyncpg.connect(dsn)
    try:
        for _ in range(ROUNDS):
            await admin.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            await asyncio.gather(_migrated(dsn), _migrated(dsn))
            applied = [r["name"] for r in await admin.fetch("SELECT name FROM schema_migrations ORDER BY name")]
            assert applied and len(applied) == len(set(applied)), applied
    finally:
        await admin.close()
