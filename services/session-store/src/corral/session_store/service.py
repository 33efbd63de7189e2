"""What every handler needs: the bus, the pool, the log, the catalog and the projector."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from corral.bus import Bus, KeyValueBucket
from corral.contracts import subjects
from corral.session_store.log import Catalog, SessionLog
from corral.session_store.projector import Projector


@dataclass(frozen=True)
class Deps:
    bus: Bus
    pool: asyncpg.Pool
    log: SessionLog
    catalog: Catalog
    projector: Projector
    leases: KeyValueBucket

    async def caught_up_sessions(self, seq: int) -> None:
        await self.projector.caught_up(subjects.SESSIONS_STREAM, seq)

    async def caught_up_catalog(self, seq: int) -> None:
        await self.projector.caught_up(subjects.CATALOG_STREAM, seq)
