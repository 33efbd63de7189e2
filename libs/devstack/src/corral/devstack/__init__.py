"""corral.devstack: run NATS, Postgres, OpenBao, a Docker engine and the Corral services on one machine.

The launcher behind ``make up`` / ``make down`` (``corral-dev``) and the test fixtures::

    from corral.devstack import Ports, Stack

    with Stack(tmp_path / "state", Ports.free()) as stack:
        client = anthropic.Anthropic(**stack.client_kwargs())
"""

from corral.devstack.components import ComponentStatus
from corral.devstack.configuration import ModelConfig
from corral.devstack.errors import (
    ComponentDiedError,
    DevstackError,
    PortInUseError,
    ReadinessTimeoutError,
)
from corral.devstack.ports import Ports
from corral.devstack.stack import Stack
from corral.devstack.state import StateDir

__all__ = [
    "ComponentDiedError",
    "ComponentStatus",
    "DevstackError",
    "ModelConfig",
    "PortInUseError",
    "Ports",
    "ReadinessTimeoutError",
    "Stack",
    "StateDir",
]
