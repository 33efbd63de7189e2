"""Service health: the request and reply of ``corral.health.<service>``, answered by every service."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from corral.contracts import subjects
from corral.contracts.operation import Operation, operation
from corral.contracts.rpc import Message


class HealthCheck(Message):
    """The request of ``corral.health.<service>``: ``{}``."""


class Health(Message):
    """A service's state. ``status`` is ``degraded`` when a dependency is not ``ok``."""

    service: str
    instance: str
    status: Literal["ok", "degraded"]
    details: dict[str, str] = Field(default_factory=dict)
    #: What the service depends on (``postgres``, ``docker``, ``vault``...) and each one's state: ``ok``,
    #: or what is wrong and what the service does meanwhile. Only ``ok`` / not ``ok`` leaves the bus.
    dependencies: dict[str, str] = Field(default_factory=dict)


def health_op(service: str) -> Operation[HealthCheck, Health]:
    """``corral.health.<service>``, answered by one instance of ``service`` with a bare ``Health``."""
    return operation(
        "health",
        subjects.health(service),
        HealthCheck,
        Health,
        queue=service,
        service=service,
        bounded=True,
        enveloped=False,
    )
