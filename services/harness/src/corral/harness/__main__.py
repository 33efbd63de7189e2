"""Composition root: ``python -m corral.harness`` (or ``corral-harness``).

Started by ``corral.runner`` (settings, telemetry, signals). Bus, wake consumer, lease bucket,
snapshot bucket, model (its SDK loaded in the background once ready), sandbox client → a TaskGroup of
the wake loop and the health responder. SIGTERM/SIGINT stop fetching; running sessions get
``shutdown_grace_s`` to finish, then their wake-ups are handed back and their leases released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from corral import runner
from corral.bus import Bus, KeyValueBucket, StreamMismatch
from corral.contracts import subjects
from corral.contracts.subjects import KeyValueSpec
from corral.harness import metrics
from corral.harness.compaction import Compactor, ContextPolicy
from corral.harness.crashpoints import Crashpoint, ExitAt, no_crash
from corral.harness.credentialhosts import BusCredentialHosts
from corral.harness.deferredmodel import DeferredModel
from corral.harness.deltas import BusDeltas
from corral.harness.environments import BusEnvironments
from corral.harness.health import serve_health
from corral.harness.lease import Leases
from corral.harness.mcp import BusMcp, McpTools
from corral.harness.pricing import load_prices
from corral.harness.redispatch import RedispatchPolicy
from corral.harness.retry import RetryPolicy
from corral.harness.sandbox import BusSandbox, ManagerWait
from corral.harness.sessionlog import BusLog
from corral.harness.settings import Settings, model_endpoint
from corral.harness.snapshots import BusSnapshots
from corral.harness.store import BusStore
from corral.harness.turn import SessionDriver
from corral.harness.wake import WakeLoop
from corral.harness.webtools import BusWeb
from corral.telemetry import metrics as telemetry_metrics

logger = logging.getLogger("corral.harness")


async def serve(settings: Settings, life: runner.Lifetime) -> None:
    stop = life.stop

    endpoint = model_endpoint(settings)
    crashpoint: Crashpoint = ExitAt(settings.crashpoint) if settings.crashpoint else no_crash
    logger.info(
        "harness starting",
        extra={
            "fields": {
                "worker_id": settings.worker_id,
                "model": endpoint.describe(),
                "concurrency": settings.concurrency,
                "crashpoint": settings.crashpoint,
            }
        },
    )
    api_key = endpoint.api_key.get_secret_value()
    async with contextlib.AsyncExitStack() as stack:
        model = DeferredModel(base_url=endpoint.base_url, api_key=api_key)  # the SDK loads once ready
        stack.push_async_callback(model.close)
        bus = await stack.enter_async_context(Bus.connect(settings.nats, name=f"harness {settings.worker_id}"))
        try:
            await bus.ensure_stream(subjects.WAKE_SPEC)
        except StreamMismatch as exc:
            raise runner.Refused(str(exc)) from None
        consumer = await bus.durable(
            subjects.WAKE_STREAM,
            subjects.WAKE_CONSUMER,
            filter_subject=subjects.WAKE_WILDCARD,
            ack_wait_s=settings.ack_wait_s,
        )
        stack.push_async_callback(consumer.close)
        bucket = await _lease_bucket(bus, subjects.lease_spec(settings.lease_ttl_s), life)
        if bucket is None:  # stopped before the session-store made it
            return

        sandboxes = BusSandbox(
            bus,
            redispatch=RedispatchPolicy(
                silence_s=settings.execute_silence_s,
                wait_s=settings.execute_redispatch_wait_s,
                max_redispatches=settings.execute_max_redispatches,
            ),
            manager_wait=ManagerWait(wait_s=settings.sandbox_wait_s),
        )
        driver = SessionDriver(
            store=BusStore(bus),
            log=BusLog(bus),
            environments=BusEnvironments(bus),
            snapshots=await BusSnapshots.bind(bus),
            snapshot_every=settings.snapshot_every_events,
            keep_folds=settings.kept_folds,
            model=model,
            compactor=Compactor(
                model,
                ContextPolicy(
                    window_tokens=settings.context_window_tokens,
                    threshold=settings.compact_threshold,
                    keep_tool_results=settings.keep_tool_results,
                    max_result_chars=settings.tool_result_max_chars,
                    summary_max_tokens=settings.summary_max_tokens,
                    count_tokens=settings.count_tokens,
                ),
            ),
            deltas=BusDeltas(bus),
            sandbox=sandboxes,
            policy=RetryPolicy(
                max_retries=settings.max_model_retries,
                backoff_s=settings.retry_backoff_s,
                max_backoff_s=settings.retry_backoff_max_s,
            ),
            max_tokens=settings.max_tokens,
            max_tool_uses=settings.max_tool_uses_per_turn,
            crashpoint=crashpoint,
            prices=load_prices(settings.model_prices),
            mcp=McpTools(
                BusMcp(bus), list_timeout_s=settings.mcp_list_timeout_s, call_timeout_s=settings.mcp_call_timeout_s
            ),
            web=BusWeb(bus),
            credential_hosts=BusCredentialHosts(bus, placements=sandboxes.placements),
        )
        wake_loop = WakeLoop(
            consumer,
            leases=Leases(bucket, holder=settings.worker_id, ttl_s=settings.lease_ttl_s),
            lease_wait_s=settings.lease_wait_s,
            runner=driver,
            concurrency=settings.concurrency,
            ack_wait_s=settings.ack_wait_s,
            shutdown_grace_s=settings.shutdown_grace_s,
            fetch_timeout_s=settings.fetch_timeout_s,
        )
        metrics.SESSIONS_ACTIVE.set_function(lambda: len(wake_loop.active))

        async def backlog() -> None:
            metrics.WAKES_PENDING.set(await consumer.pending())

        async with asyncio.TaskGroup() as tg:
            tg.create_task(wake_loop.run(stop), name="wake-loop")
            life.background(
                telemetry_metrics.sample(backlog, interval_s=metrics.BACKLOG_SAMPLE_S, name="wake backlog"),
                name="wake-backlog",
            )
            tg.create_task(
                serve_health(
                    bus,
                    worker_id=settings.worker_id,
                    loop=wake_loop,
                    driver=driver,
                    stop=stop,
                    model_state=lambda: model.state,
                ),
                name="health",
            )
            life.ready(worker_id=settings.worker_id)
            tg.create_task(model.preload(), name="model-preload")  # a worker thread: health answers meanwhile
        logger.info("harness stopped", extra={"fields": {"worker_id": settings.worker_id}})


async def _lease_bucket(bus: Bus, spec: KeyValueSpec, life: runner.Lifetime) -> KeyValueBucket | None:
    """The lease bucket its owner (the session-store) made: waited for until it exists (a harness may
    start first), refused when its TTL is not this harness's ``CORRAL_HARNESS_LEASE_TTL_S``."""
    waiting = False
    while not life.stop.is_set():
        try:
            bucket = await bus.bind_key_value(spec)
        except StreamMismatch as exc:
            raise runner.Refused(str(exc)) from None
        if bucket is not None:
            return bucket
        if not waiting:
            logger.info("waiting for %s to create the key-value bucket %s", spec.owner, spec.name)
            waiting = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await life.stop.wait()
    return None


def main() -> None:
    runner.run("harness", Settings, serve, grace_s=lambda settings: settings.shutdown_grace_s + 15.0)


if __name__ == "__main__":
    main()
