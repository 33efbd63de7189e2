"""session-store: the sole writer of the session log, and the owner of the Postgres projections."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal

import uvloop

from corral import telemetry
from corral.bus import Bus, StreamMismatch, instance_name, serve_health
from corral.contracts import subjects
from corral.contracts.rpc import CreateApiKey, Health
from corral.session_store import db, health, wakes
from corral.session_store.handlers import auth
from corral.session_store.log import Catalog, SessionLog
from corral.session_store.projector import Projector
from corral.session_store.rpc import operations
from corral.session_store.service import Deps
from corral.session_store.settings import Settings

logger = logging.getLogger("corral.session_store")


async def run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    instance = instance_name()

    async with contextlib.AsyncExitStack() as stack:
        bus = await stack.enter_async_context(Bus.connect(settings.nats, name="session-store"))
        for spec in (subjects.SESSIONS_SPEC, subjects.CATALOG_SPEC, subjects.WAKE_SPEC):
            await bus.ensure_stream(spec)
        # the sandbox-manager's headers-only view of the log, made here so it needs no read rights on it
        await bus.ensure_consumer(subjects.SANDBOX_RELEASES_SPEC)
        leases = await bus.key_value(subjects.LEASE_BUCKET, ttl_s=settings.lease_ttl_s)
        pool = await stack.enter_async_context(db.open_pool(settings.database_url))
        await db.migrate(pool)
        projector = Projector(bus, pool)
        deps = Deps(
            bus=bus,
            pool=pool,
            log=SessionLog(bus, cache_size=settings.state_cache_size),
            catalog=Catalog(bus),
            projector=projector,
            leases=leases,
            events_page_bytes=settings.events_page_bytes,
        )

        async def report() -> Health:
            return await health.report(bus, pool, projector, instance=instance)

        async with asyncio.TaskGroup() as tg:
            projecting = tg.create_task(projector.run(), name="projector")
            await _wait_projection(bus, projector)
            if settings.bootstrap_api_key is not None:
                digest = hashlib.sha256(settings.bootstrap_api_key.get_secret_value().encode()).hexdigest()
                await auth.create(
                    deps, CreateApiKey(workspace_id=settings.bootstrap_workspace, key_sha256=digest, name="bootstrap")
                )
            await wakes.sweep(deps)
            async with operations(deps).serve(bus), serve_health(bus, "session-store", report):
                logger.info("session-store ready", extra={"fields": {"instance": instance}})
                await stop.wait()
                logger.info("session-store stopping")
            projecting.cancel()


async def _wait_projection(bus: Bus, projector: Projector) -> None:
    """Before serving, catch the projection up with what the streams already hold."""
    for stream in (subjects.CATALOG_STREAM, subjects.SESSIONS_STREAM):
        last = await bus.stream_last_seq(stream)
        if last:
            await projector.caught_up(stream, last, timeout=120.0)


def main() -> None:
    settings = Settings()
    telemetry.configure("session-store", logs=settings.log)
    try:
        uvloop.run(run(settings))
    except StreamMismatch as exc:
        logger.error("refusing to start: %s", exc)
        raise SystemExit(2) from None
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
