"""The sandbox-manager's composition root: driver, pool -> bus, records, egress, environment images,
sessions -> the engine watch -> once the engine was first checked: the operations and health (before
that a provision could only be answered "not checked yet") -> once the engine and image are there:
reconciliation, then pool refill, the reaper and the release consumer, and the service is ready.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from corral.bus import Bus, NoResponders, PullConsumer, StreamMismatch, instance_name
from corral.contracts import subjects
from corral.contracts.egress import EgressPolicy
from corral.contracts.sandbox import Release, SandboxOps, on_host
from corral.contracts.sandbox import SandboxHost as SandboxHostAd
from corral.runner import Lifetime, Refused
from corral.sandbox_manager import metrics, releases
from corral.sandbox_manager.builds import BuildLimits
from corral.sandbox_manager.channel_limits import ChannelLimits, ReplyAssemblies
from corral.sandbox_manager.container_spec import EGRESS
from corral.sandbox_manager.containers import Driver
from corral.sandbox_manager.egress import BusEgress
from corral.sandbox_manager.engine import EngineWatch
from corral.sandbox_manager.environments import base_spec
from corral.sandbox_manager.executions import Executions
from corral.sandbox_manager.hosts import HostBoard, describe_host
from corral.sandbox_manager.images import EnvironmentImages, read_trusted_ca
from corral.sandbox_manager.pool import Pool
from corral.sandbox_manager.reaper import Reaper
from corral.sandbox_manager.records import SandboxRecords, ToolRecords
from corral.sandbox_manager.repositories import BusRepositoryChecks
from corral.sandbox_manager.rpc import Service, serve_all
from corral.sandbox_manager.sandboxes import Launcher
from corral.sandbox_manager.sessions import Sessions
from corral.sandbox_manager.settings import Settings
from corral.telemetry import metrics as telemetry_metrics

logger = logging.getLogger("corral.sandbox_manager")


async def serve(settings: Settings, life: Lifetime) -> None:
    instance = instance_name()
    box = settings.sandbox
    driver = Driver(settings.docker_host, box.scope)
    engine = EngineWatch(
        driver,
        box.image,
        probe_timeout_s=settings.health_probe_timeout_s,
        retry_s=settings.engine_retry_s,
    )
    launcher = Launcher(
        driver,
        start_timeout_s=box.start_timeout_s,
        limits=ChannelLimits(
            max_frame_bytes=box.max_frame_bytes,
            stderr_log_bytes=box.stderr_log_bytes,
            max_reply_bytes=box.max_reply_bytes,
            assemblies=ReplyAssemblies(box.reply_assemblies),
        ),
    )
    pool = Pool(launcher, size=box.pool_size, max_configs=box.pool_configs)
    trusted_ca = read_trusted_ca(box.environment_ca_file)

    stack = life.stack
    stack.push_async_callback(driver.aclose)
    bus = await stack.enter_async_context(Bus.connect(settings.nats, name="sandbox-manager"))
    try:
        tool_records = await ToolRecords.open(bus, ttl_s=box.result_ttl_s)
        sandbox_records = await SandboxRecords.open(bus, ttl_s=box.record_ttl_s)
        board = await HostBoard.open(bus, box.host_id)
    except StreamMismatch as exc:  # a TTL setting changed since the bucket was made
        raise Refused(str(exc)) from None
    egress = BusEgress(bus, host=box.egress_host or None)
    launcher.egress = egress  # pooled sandboxes with network get egress slots
    images = EnvironmentImages(
        driver,
        egress,
        limits=BuildLimits(
            memory=box.environment_build_memory,
            nano_cpus=int(box.environment_build_cpus * 1_000_000_000),
            pids=box.environment_build_pids,
        ),
        timeout_s=box.environment_build_timeout_s,
        failure_memory_s=box.environment_build_retry_s,
        trusted_ca=trusted_ca,
        builds_enabled=box.environment_builds == "on",
        build_egress=EgressPolicy(allowed_hosts=list(box.environment_build_hosts), allow_package_managers=True),
    )
    stack.push_async_callback(pool.close)
    sessions = Sessions(
        launcher,
        pool,
        sandbox_records,
        engine,
        box,
        images=images,
        egress=egress,
        repositories=BusRepositoryChecks(bus),
    )
    stack.push_async_callback(images.close)
    stack.push_async_callback(sessions.close)
    executions = Executions(sessions, tool_records, box)
    reaper = Reaper(driver, launcher, sessions, pool, sandbox_records, box, images=images)
    service = Service(
        instance=instance,
        sessions=sessions,
        executions=executions,
        pool=pool,
        engine=engine,
        publish=bus.publish_core,
        host=box.host_id,
    )

    async def bind_releases() -> PullConsumer | None:
        return await bus.bind(subjects.SANDBOX_RELEASES_SPEC)

    async def release(session_id: str, reason: str) -> None:
        # One release consumer serves every host: a session placed on another host is released there.
        placed = None if sessions.get(session_id) is not None else await board.placement(session_id)
        if placed is not None and placed.host != box.host_id:
            try:
                await bus.call(
                    on_host(SandboxOps.RELEASE, placed.host), Release(session_id=session_id, reason=reason), timeout=60
                )
                return
            except NoResponders:  # that host is gone, and its sandboxes with it: forget the session here
                logger.info(
                    "released a session whose sandbox host is gone",
                    extra={"fields": {"session_id": session_id, "host": placed.host}},
                )
        await sessions.release(session_id)
        await board.forget(session_id, placed.host if placed is not None else box.host_id)

    def advertisement() -> SandboxHostAd:
        return describe_host(
            box.host_id,
            instance,
            ready=engine.status.ok and engine.status.image_present,
            sessions=sessions.count(),
            capacity=box.capacity,
            warm=sum(pool.sizes().values()),
            egress_host=box.egress_host,
        )

    serving = asyncio.Event()

    async def upkeep() -> None:
        await engine.ready.wait()
        pool.want(base_spec(box))  # environments without network access
        pool.want(replace(base_spec(box), network=EGRESS))  # the default (unrestricted) and limited ones
        await reaper.reconcile()
        life.background(pool.run(), name="pool-refill")
        life.background(reaper.run(), name="reaper")
        # after reconciliation: a release must find the sandbox a previous run left, adopted
        life.background(releases.follow(bind_releases, release), name="releases")
        await serving.wait()
        life.background(board.advertise(advertisement), name="host-advertisement")
        life.ready(
            instance=instance,
            image=box.image,
            scope=box.scope,
            host=box.host_id,
            egress_host=box.egress_host or "any (queue group)",
        )

    async def sample() -> None:
        metrics.sample_pools(pool.sizes(), sessions.count())

    life.background(telemetry_metrics.sample(sample, interval_s=metrics.SAMPLE_S, name="pool"), name="pool-metrics")
    life.background(engine.run(), name="engine-watch")
    life.background(upkeep(), name="upkeep")
    if not await _first_check(engine, life.stop):
        return
    await stack.enter_async_context(serve_all(bus, service))
    serving.set()
    logger.info(
        "sandbox-manager serving",
        extra={
            "fields": {"instance": instance, "image": box.image, "scope": box.scope, "engine": engine.status.message}
        },
    )
    await life.stop.wait()
    executions.shutdown()


async def _first_check(engine: EngineWatch, stop: asyncio.Event) -> bool:
    """Wait until the engine was first looked for (True), or for ``stop`` (False)."""
    checked = asyncio.ensure_future(engine.checked.wait())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({checked, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        checked.cancel()
        stopping.cancel()
    return engine.checked.is_set()
