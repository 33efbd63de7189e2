"""Service health over the bus: asking the others (``GET /health``), and answering for the gateway."""

from __future__ import annotations

from typing import Protocol

from corral.bus import Bus, NoResponders, UnreadableReply
from corral.contracts.api.errors import ApiError
from corral.contracts.rpc import Health, HealthCheck, health_op


class HealthProbe(Protocol):
    async def check(self, service: str, *, timeout_s: float) -> Health | None:
        """The service's answer, or ``None`` when no instance answered within ``timeout_s``."""
        ...


class BusProbe:
    """``HealthProbe`` over the ``health_op(service)`` operation (``corral.health.<service>``)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def check(self, service: str, *, timeout_s: float) -> Health | None:
        try:
            return await self._bus.call(health_op(service), HealthCheck(), timeout=timeout_s)
        except (NoResponders, TimeoutError, UnreadableReply, ApiError):
            return None


def gateway_health(instance: str) -> Health:
    return Health(service="gateway", instance=instance, status="ok")
