"""What every handler needs: the bus, the pool, the log, the catalog and the projector."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import asyncpg

from corral.bus import Bus, KeyValueBucket
from corral.contracts import subjects
from corral.contracts.api.agents import Agent
from corral.contracts.api.environments import Environment
from corral.session_store.catalog_cache import CatalogCache
from corral.session_store.log import Catalog, SessionLog
from corral.session_store.projector import Projector
from corral.session_store.wakesender import WakeSender

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deps:
    bus: Bus
    pool: asyncpg.Pool
    log: SessionLog
    catalog: Catalog
    projector: Projector
    leases: KeyValueBucket
    wakes: WakeSender
    """Stores the wake-ups appends cause, after their replies."""
    events_page_bytes: int = 512 * 1024
    """The byte bound of an events.list page (``CORRAL_SESSION_STORE_EVENTS_PAGE_BYTES``)."""
    bootstrap_workspace: str | None = None
    """The workspace of the bootstrap keys (``CORRAL_SESSION_STORE_BOOTSTRAP_WORKSPACE``): never archived."""
    subscriber_mirrors: bool = False
    """Whether the subscribers' account mirrors the log (``CORRAL_SESSION_STORE_SUBSCRIBER_MIRRORS``)."""
    agents: CatalogCache[tuple[str, Agent]] = field(default_factory=lambda: CatalogCache(subjects.agent_log("")))
    """Agents by subject: (workspace id, agent), versions in the entry (``catalog_cache``)."""
    environments: CatalogCache[tuple[str, Environment]] = field(
        default_factory=lambda: CatalogCache(subjects.environment_log(""))
    )
    """Environments by subject: (workspace id, environment)."""

    async def caught_up_sessions(self, seq: int) -> None:
        await self.projector.caught_up(subjects.SESSIONS_STREAM, seq)

    async def caught_up_catalog(self, seq: int) -> None:
        await self.projector.caught_up(subjects.CATALOG_STREAM, seq)

    async def settle_catalog_write(self, seq: int) -> None:
        """Wait until the projection shows a catalog write, so its writer reads it back. When the
        projection cannot (Postgres down), the write stands all the same: it is in the log, and
        failing the request would make a retrying client write it twice."""
        try:
            await self.caught_up_catalog(seq)
        except TimeoutError:
            logger.warning("projection behind; the catalog write is in the log", extra={"fields": {"seq": seq}})
