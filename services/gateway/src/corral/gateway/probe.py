"""Service health over the bus: asking the others (``GET /health``), and answering for the gateway."""

from __future__ import annotations

from typing import Protocol

from corral.bus import Bus, NoResponders, UnreadableReply
from corral.contracts.api.errors import ApiError
from corral.contracts.health import Health, HealthCheck, health_op


class HealthProbe(Protocol):
    async def check(self, service: str, *, timeout_s: float) -> Health | None:
        """The service's answer, or ``None`` when no instance answered within ``timeout_s``."""
        ...

    @property
    def bus_connected(self) -> bool:
        """Whether this gateway's own NATS connection is up."""
        ...


class BusProbe:
    """``HealthProbe`` over the ``health_op(service)`` operation (``corral.health.<service>``)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    @property
    def bus_connected(self) -> bool:
        return self._bus.connected

    async def check(self, service: str, *, timeout_s: float) -> Health | None:
        try:
            return await self._bus.call(health_op(service), HealthCheck(), timeout=timeout_s)
        except (NoResponders, TimeoutError, UnreadableReply, ApiError):
            return None


#: The gateway's NATS dependency while its connection is down.
NATS_DOWN = "disconnected from NATS; reconnecting (API requests answer 503 meanwhile)"


def gateway_health(instance: str, *, bus_connected: bool) -> Health:
    """The gateway's own health: it depends on NATS only (every other service is reached through it)."""
    return Health(
        service="gateway",
        instance=instance,
        status="ok" if bus_connected else "degraded",
        dependencies={"nats": "ok" if bus_connected else NATS_DOWN},
    )
