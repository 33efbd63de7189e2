"""sandbox-manager: turns environments into hardened Docker containers and runs the built-in tools in them.

Composition root: settings -> telemetry -> driver, pool -> bus, records, egress, environment
images, sessions -> tasks (engine watch; once the engine and image are there: reconciliation, then
pool refill, the reaper and the release consumer) -> serving until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import replace

import uvloop

from corral import telemetry
from corral.bus import Bus, PullConsumer, instance_name
from corral.contracts import subjects
from corral.contracts.egress import EgressPolicy
from corral.sandbox_manager import releases
from corral.sandbox_manager.builds import BuildLimits
from corral.sandbox_manager.channel import ChannelLimits, ReplyAssemblies
from corral.sandbox_manager.containers import EGRESS, Driver
from corral.sandbox_manager.egress import BusEgress
from corral.sandbox_manager.engine import EngineWatch
from corral.sandbox_manager.environments import base_spec
from corral.sandbox_manager.executions import Executions
from corral.sandbox_manager.images import EnvironmentImages, read_trusted_ca
from corral.sandbox_manager.pool import Pool
from corral.sandbox_manager.reaper import Reaper
from corral.sandbox_manager.records import SandboxRecords, ToolRecords
from corral.sandbox_manager.rpc import Service, serve_all
from corral.sandbox_manager.sandboxes import Launcher
from corral.sandbox_manager.sessions import Sessions
from corral.sandbox_manager.settings import Settings

logger = logging.getLogger("corral.sandbox_manager")

_STOP_GRACE_S = 20.0


async def run(settings: Settings, stop: asyncio.Event, *, ready: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set; ``ready`` is set once the engine is reconciled and the pool started."""
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

    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(driver.aclose)
        bus = await stack.enter_async_context(Bus.connect(settings.nats, name="sandbox-manager"))
        tool_records = await ToolRecords.open(bus, ttl_s=box.result_ttl_s)
        sandbox_records = await SandboxRecords.open(bus, ttl_s=box.record_ttl_s)
        egress = BusEgress(bus)
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
        sessions = Sessions(launcher, pool, sandbox_records, engine, box, images=images, egress=egress)
        executions = Executions(sessions, tool_records, box)
        reaper = Reaper(driver, launcher, sessions, pool, sandbox_records, box, images=images)
        service = Service(
            instance=instance,
            sessions=sessions,
            executions=executions,
            pool=pool,
            engine=engine,
            publish=bus.publish_core,
        )

        async def bind_releases() -> PullConsumer | None:
            return await bus.bind(subjects.SANDBOX_RELEASES_SPEC)

        async def release(session_id: str, _reason: str) -> None:
            await sessions.release(session_id)

        async def upkeep() -> None:
            await engine.ready.wait()
            pool.want(base_spec(box))  # environments without network access
            pool.want(replace(base_spec(box), network=EGRESS))  # the default (unrestricted) and limited ones
            await reaper.reconcile()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(pool.run(), name="pool-refill")
                tasks.create_task(reaper.run(), name="reaper")
                # after reconciliation: a release must find the sandbox a previous run left, adopted
                tasks.create_task(releases.follow(bind_releases, release), name="releases")
                if ready is not None:
                    ready.set()

        try:
            async with serve_all(bus, service), asyncio.TaskGroup() as tg:
                watching = tg.create_task(engine.run(), name="engine-watch")
                upkeeping = tg.create_task(upkeep(), name="upkeep")
                logger.info(
                    "sandbox-manager serving",
                    extra={"fields": {"instance": instance, "image": box.image, "scope": box.scope}},
                )
                await stop.wait()
                logger.info("sandbox-manager stopping")
                executions.shutdown()
                watching.cancel()
                upkeeping.cancel()
        finally:
            await sessions.close()
            await images.close()
            await pool.close()


def main() -> None:
    settings = Settings()
    telemetry.configure("sandbox-manager", logs=settings.log)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        serving = asyncio.ensure_future(run(settings, stop))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():
            # a clean stop takes a moment; one stuck (e.g. still connecting to NATS) is cancelled
            await asyncio.wait({serving}, timeout=_STOP_GRACE_S)
            serving.cancel()
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    try:
        uvloop.run(serve())
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
