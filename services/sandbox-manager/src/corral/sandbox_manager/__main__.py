"""sandbox-manager: turns environments into hardened Docker containers and runs tools in them.

This version joins the bus and reports health, including whether a Docker engine answers; the
containers and the toolset arrive with the tool loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

from corral import telemetry
from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.rpc import Health
from corral.sandbox_manager.engine import Engine
from corral.sandbox_manager.settings import Settings

logger = logging.getLogger("corral.sandbox_manager")


async def run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    instance = f"{socket.gethostname()}:{os.getpid()}"
    engine = Engine(settings.docker_host)

    async def health(_data: bytes, _headers: dict[str, str]) -> bytes:
        version = await engine.probe(settings.health_probe_timeout_s)
        if version is None:
            status = Health(
                service="sandbox-manager",
                instance=instance,
                status="degraded",
                details={"docker": "no Docker engine answers; set CORRAL_DOCKER_HOST or start dockerd"},
            )
        else:
            status = Health(service="sandbox-manager", instance=instance, status="ok", details={"docker": version})
        return status.model_dump_json().encode()

    async with contextlib.AsyncExitStack() as stack:
        bus = await stack.enter_async_context(Bus.connect(settings.nats, name="sandbox-manager"))
        await stack.enter_async_context(bus.serve(subjects.health("sandbox-manager"), health, queue="sandbox-manager"))
        version = await engine.probe(settings.health_probe_timeout_s)
        logger.info(
            "sandbox-manager ready",
            extra={"fields": {"instance": instance, "docker": version or "unavailable"}},
        )
        await stop.wait()
        logger.info("sandbox-manager stopping")


def main() -> None:
    settings = Settings()
    telemetry.configure("sandbox-manager", logs=settings.log)
    try:
        asyncio.run(run(settings))
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
