"""credential-proxy: the only process that can read OpenBao, and the sandboxes' only way out.

Composition root: settings -> telemetry -> this machine's interface addresses (which egress never
reaches; the service does not start when they cannot be read) -> bus, egress grants -> the egress
proxies, one unix socket
per session under ``CORRAL_EGRESS_SOCKET_DIR`` (re-opened from their grants; none when it is unset) ->
serving ``corral.rpc.egress.*`` and health until SIGTERM/SIGINT. MCP and git proxying arrive with the
vault work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from corral import telemetry
from corral.bus import Bus, instance_name
from corral.credential_proxy.egress import Egress
from corral.credential_proxy.grants import Grants
from corral.credential_proxy.hosts import operator_allows
from corral.credential_proxy.interfaces import OwnAddresses
from corral.credential_proxy.rpc import Service, serve_all
from corral.credential_proxy.settings import Settings
from corral.credential_proxy.vault import Vault

logger = logging.getLogger("corral.credential_proxy")

_STOP_GRACE_S = 20.0


async def run(settings: Settings, stop: asyncio.Event, *, ready: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set; ``ready`` is set once the grants are restored and requests are served."""
    instance = instance_name()
    vault = Vault(settings.vault_addr, settings.vault_token, timeout=settings.health_probe_timeout_s)
    own = own_addresses(settings)
    async with contextlib.AsyncExitStack() as stack:
        bus = await stack.enter_async_context(Bus.connect(settings.nats, name="credential-proxy"))
        grants = await Grants.open(bus, ttl_s=settings.egress.grant_ttl_s)
        egress = await stack.enter_async_context(Egress(settings.egress, grants, own_addresses=own.current).running())
        await egress.restore()
        service = Service(
            instance=instance, egress=egress, vault=vault, probe_timeout_s=settings.health_probe_timeout_s
        )
        await stack.enter_async_context(serve_all(bus, service))
        state = await vault.probe(settings.health_probe_timeout_s)
        logger.info(
            "credential-proxy ready",
            extra={
                "fields": {
                    "instance": instance,
                    "vault": state,
                    "egress_socket_dir": str(settings.egress.socket_dir or "unset: no egress"),
                    "egress_listeners": egress.count(),
                }
            },
        )
        if ready is not None:
            ready.set()
        await stop.wait()
        logger.info("credential-proxy stopping")


def own_addresses(settings: Settings) -> OwnAddresses:
    """This machine's interface addresses, read now (they are read again for every destination).

    Raises:
        OSError: they cannot be read; egress would not know which addresses to refuse.
    """
    try:
        own = OwnAddresses()
    except OSError as exc:
        logger.error(
            "cannot read this machine's interface addresses over rtnetlink, so egress cannot refuse them; "
            "run the credential-proxy where it can open an AF_NETLINK socket (a plain process or host networking)",
            extra={"fields": {"error": str(exc)}},
        )
        raise
    allowed = sorted(str(a) for a in own.current() if operator_allows(a, settings.egress.allow_addresses))
    if allowed:
        logger.warning(
            "egress allows addresses of this machine: sandboxes can reach its services on them",
            extra={"fields": {"addresses": allowed, "setting": "CORRAL_EGRESS_ALLOW_ADDRESSES"}},
        )
    return own


def main() -> None:
    settings = Settings()
    telemetry.configure("credential-proxy", logs=settings.log)

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
        asyncio.run(serve())
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
