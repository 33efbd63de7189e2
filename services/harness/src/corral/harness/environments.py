"""The session's environment (its ``config`` says how to build the sandbox), read from the catalog.

``BusEnvironments`` folds the environment's subject on ``CORRAL_CATALOG`` (a handful of records:
each save, then maybe a deletion); ``None`` when it was deleted or cannot be read right now, which
the driver turns into a tool error the model can act on.
"""

from __future__ import annotations

import logging
from typing import Protocol, assert_never

from pydantic import ValidationError

from corral.bus import Bus
from corral.contracts.api.environments import Environment
from corral.contracts.log import (
    AgentArchived,
    AgentSaved,
    ApiKeyCreated,
    ApiKeyUpdated,
    CredentialDeleted,
    CredentialSaved,
    EnvironmentDeleted,
    EnvironmentSaved,
    VaultDeleted,
    VaultSaved,
    WorkspaceSaved,
    parse_catalog_record,
)
from corral.contracts.subjects import CATALOG_STREAM, environment_log

logger = logging.getLogger(__name__)


class Environments(Protocol):
    async def get(self, environment_id: str) -> Environment | None: ...


class BusEnvironments:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def get(self, environment_id: str) -> Environment | None:
        environment: Environment | None = None
        try:
            async for message in self._bus.read(CATALOG_STREAM, environment_log(environment_id)):
                try:
                    record = parse_catalog_record(message.data)
                except ValidationError:
                    continue
                match record:
                    case EnvironmentSaved():
                        environment = record.environment
                    case EnvironmentDeleted():
                        environment = None
                    case (
                        AgentSaved()
                        | AgentArchived()
                        | ApiKeyCreated()
                        | ApiKeyUpdated()
                        | WorkspaceSaved()
                        | VaultSaved()
                        | VaultDeleted()
                        | CredentialSaved()
                        | CredentialDeleted()
                    ):
                        continue
                    case _:
                        assert_never(record)
        except Exception:  # the turn can still run; a tool call then says the environment is unreadable
            logger.warning(
                "could not read the environment", extra={"fields": {"environment_id": environment_id}}, exc_info=True
            )
            return None
        return environment
