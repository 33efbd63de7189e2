"""The session-store's composition root: bus and streams, Postgres and its migrations, the projector
caught up with the streams, the bootstrap workspace and keys, the wake sweep, then the operations and health,
and the wake-ups the operations' appends cause, stored after their replies (``wakesender``).

It is ready (and answers health) only once the projection has caught up and the operations are served.
"""

from __future__ import annotations

import hashlib

from corral.bus import Bus, StreamMismatch, instance_name, serve_health
from corral.bus import Refused as BusRefused
from corral.contracts import subjects, subscribers
from corral.contracts.api.admin import key_hint
from corral.contracts.api.agents import Agent
from corral.contracts.api.environments import Environment
from corral.contracts.health import Health
from corral.contracts.rpc import CreateApiKey
from corral.runner import Lifetime, Refused
from corral.session_store import catalog_cache, db, health, wakes
from corral.session_store.catalog_cache import CatalogCache
from corral.session_store.handlers import auth, workspaces
from corral.session_store.log import Catalog, SessionLog
from corral.session_store.projector import Projector
from corral.session_store.rpc import operations
from corral.session_store.service import Deps
from corral.session_store.settings import Settings
from corral.session_store.wakesender import WakeSender
from corral.telemetry import metrics


async def serve(settings: Settings, life: Lifetime) -> None:
    instance = instance_name()
    stack = life.stack
    bus = await stack.enter_async_context(Bus.connect(settings.nats, name="session-store"))
    try:
        for spec in (subjects.SESSIONS_SPEC, subjects.CATALOG_SPEC, subjects.WAKE_SPEC):
            await bus.ensure_stream(spec)
        # the sandbox-manager's headers-only view of the log, made here so it needs no read rights on it
        await bus.ensure_consumer(subjects.SANDBOX_RELEASES_SPEC)
        # and the credential-proxy's, which closes ended sessions' MCP connections
        await bus.ensure_consumer(subjects.MCP_SESSION_ENDINGS_SPEC)
        # the harness binds to it and refuses to start when its lease TTL differs from this one
        leases = await bus.ensure_key_value(subjects.lease_spec(settings.lease_ttl_s))
        if settings.subscriber_mirrors:  # what external subscribers read, in their own account
            for stream in subscribers.MIRRORED_STREAMS:
                await bus.mirrors().ensure(stream)
    except (StreamMismatch, BusRefused) as exc:
        raise Refused(str(exc)) from None
    pool = await stack.enter_async_context(db.open_pool(settings.postgres.url))
    await db.migrate(pool)
    projector = Projector(bus, pool)
    agents: CatalogCache[tuple[str, Agent]] = CatalogCache(subjects.agent_log(""))
    environments: CatalogCache[tuple[str, Environment]] = CatalogCache(subjects.environment_log(""))
    # The cache hears of every catalog record stored from here on, before anything is read to fill it.
    catalog_seq = await bus.stream_last_seq(subjects.CATALOG_STREAM)
    life.background(catalog_cache.follow(bus, [agents, environments], after_seq=catalog_seq), name="catalog-cache")
    wake_sender = WakeSender(bus)
    deps = Deps(
        bus=bus,
        pool=pool,
        log=SessionLog(bus, cache_size=settings.state_cache_size),
        catalog=Catalog(bus, caches=[agents, environments]),
        agents=agents,
        environments=environments,
        projector=projector,
        leases=leases,
        wakes=wake_sender,
        events_page_bytes=settings.events_page_bytes,
        bootstrap_workspace=settings.bootstrap_workspace,
        subscriber_mirrors=settings.subscriber_mirrors,
    )

    async def report() -> Health:
        return await health.report(bus, pool, projector, instance=instance)

    projecting = life.background(projector.run(), name="projector")
    life.background(
        metrics.sample(lambda: health.sample_lags(bus, projector), interval_s=health.LAG_SAMPLE_S, name="projection"),
        name="projection-lag",
    )
    await _wait_projection(bus, projector)
    await _bootstrap(deps, settings)
    await wakes.sweep(deps)
    # Not a background task: it ends once the operations are no longer served and what waits is sent.
    life.tasks.create_task(wake_sender.run(), name="wake-sender")
    try:
        async with operations(deps).serve(bus), serve_health(bus, "session-store", report):
            life.ready(instance=instance)
            await life.stop.wait()
    finally:
        wake_sender.close()
    # the operations are no longer served: nothing reads the projection any more
    projecting.cancel()


async def _bootstrap(deps: Deps, settings: Settings) -> None:
    """Record the bootstrap workspace and register the bootstrap keys (each only once: a key an
    administrator revoked stays revoked across restarts)."""
    await workspaces.ensure(deps, settings.bootstrap_workspace, name=settings.bootstrap_workspace)
    keys = (
        ("bootstrap", "user", settings.bootstrap_api_key),
        ("bootstrap-admin", "admin", settings.bootstrap_admin_key),
    )
    for name, role, secret in keys:
        if secret is None:
            continue
        key = secret.get_secret_value()
        digest = hashlib.sha256(key.encode()).hexdigest()
        request = CreateApiKey(
            workspace_id=settings.bootstrap_workspace,
            key_sha256=digest,
            name=name,
            role="admin" if role == "admin" else "user",
            partial_key_hint=key_hint(key),
        )
        await auth.create(deps, request)


async def _wait_projection(bus: Bus, projector: Projector) -> None:
    """Before serving, catch the projection up with what the streams already hold."""
    for stream in (subjects.CATALOG_STREAM, subjects.SESSIONS_STREAM):
        last = await bus.stream_last_seq(stream)
        if last:
            await projector.caught_up(stream, last, timeout=120.0)
