"""credential-proxy: the only process that can read OpenBao.

This version joins the bus and reports whether the vault is reachable, unsealed and accepts its
token; MCP and git proxying arrive with the vault work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from corral import telemetry
from corral.bus import Bus, instance_name, serve_health
from corral.contracts.rpc import Health
from corral.credential_proxy.settings import Settings
from corral.credential_proxy.vault import Vault

logger = logging.getLogger("corral.credential_proxy")


async def run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    instance = instance_name()
    vault = Vault(settings.vault_addr, settings.vault_token, timeout=settings.health_probe_timeout_s)

    async def report() -> Health:
        state = await vault.probe(settings.health_probe_timeout_s)
        status = "ok" if state == "ok" else "degraded"
        return Health(service="credential-proxy", instance=instance, status=status, details={"vault": state})

    async with contextlib.AsyncExitStack() as stack:
        bus = await stack.enter_async_context(Bus.connect(settings.nats, name="credential-proxy"))
        await stack.enter_async_context(serve_health(bus, "credential-proxy", report))
        state = await vault.probe(settings.health_probe_timeout_s)
        logger.info("credential-proxy ready", extra={"fields": {"instance": instance, "vault": state}})
        await stop.wait()
        logger.info("credential-proxy stopping")


def main() -> None:
    settings = Settings()
    telemetry.configure("credential-proxy", logs=settings.log)
    try:
        asyncio.run(run(settings))
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
