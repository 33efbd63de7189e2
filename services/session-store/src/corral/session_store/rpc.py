"""Request-reply: the session-store's operations, served by ``corral.bus.Operations`` (an
``ApiError`` becomes the reply's error, a database outage an ``overloaded_error`` to retry, anything
unexpected an ``api_error`` naming no internals)."""

from __future__ import annotations

import functools
import logging

from corral.bus import Operations
from corral.contracts.api.errors import ErrorDetail
from corral.contracts.rpc import StoreOps
from corral.session_store.db import UNAVAILABLE
from corral.session_store.handlers import (
    agents,
    apikeys,
    auth,
    credentials,
    environments,
    events,
    sessions,
    vaults,
    workspaces,
)
from corral.session_store.service import Deps

logger = logging.getLogger(__name__)


def _translate(exc: Exception) -> ErrorDetail | None:
    if isinstance(exc, UNAVAILABLE):
        logger.warning("database unavailable", extra={"fields": {"error": type(exc).__name__}})
        return ErrorDetail(type="overloaded_error", message="Corral's database is unavailable right now; retry shortly")
    return None


def operations(deps: Deps) -> Operations:
    """Every ``StoreOps`` operation on its subject (queue group ``session-store``)."""
    p = functools.partial
    return (
        Operations(service="session store", translate=_translate)
        .handle(StoreOps.AUTH_RESOLVE, p(auth.resolve, deps))
        .handle(StoreOps.API_KEYS_CREATE, p(auth.create, deps))
        .handle(StoreOps.API_KEYS_ISSUE, p(apikeys.issue, deps))
        .handle(StoreOps.API_KEYS_GET, p(apikeys.get, deps))
        .handle(StoreOps.API_KEYS_UPDATE, p(apikeys.update, deps))
        .handle(StoreOps.API_KEYS_LIST, p(apikeys.list_, deps))
        .handle(StoreOps.WORKSPACES_CREATE, p(workspaces.create, deps))
        .handle(StoreOps.WORKSPACES_GET, p(workspaces.get, deps))
        .handle(StoreOps.WORKSPACES_UPDATE, p(workspaces.update, deps))
        .handle(StoreOps.WORKSPACES_LIST, p(workspaces.list_, deps))
        .handle(StoreOps.WORKSPACES_ARCHIVE, p(workspaces.archive, deps))
        .handle(StoreOps.AGENTS_CREATE, p(agents.create, deps))
        .handle(StoreOps.AGENTS_GET, p(agents.get, deps))
        .handle(StoreOps.AGENTS_UPDATE, p(agents.update, deps))
        .handle(StoreOps.AGENTS_LIST, p(agents.list_, deps))
        .handle(StoreOps.AGENTS_ARCHIVE, p(agents.archive, deps))
        .handle(StoreOps.AGENTS_VERSIONS, p(agents.versions, deps))
        .handle(StoreOps.ENVIRONMENTS_CREATE, p(environments.create, deps))
        .handle(StoreOps.ENVIRONMENTS_GET, p(environments.get, deps))
        .handle(StoreOps.ENVIRONMENTS_UPDATE, p(environments.update, deps))
        .handle(StoreOps.ENVIRONMENTS_LIST, p(environments.list_, deps))
        .handle(StoreOps.ENVIRONMENTS_ARCHIVE, p(environments.archive, deps))
        .handle(StoreOps.ENVIRONMENTS_DELETE, p(environments.delete, deps))
        .handle(StoreOps.VAULTS_CREATE, p(vaults.create, deps))
        .handle(StoreOps.VAULTS_GET, p(vaults.get, deps))
        .handle(StoreOps.VAULTS_UPDATE, p(vaults.update, deps))
        .handle(StoreOps.VAULTS_LIST, p(vaults.list_, deps))
        .handle(StoreOps.VAULTS_ARCHIVE, p(vaults.archive, deps))
        .handle(StoreOps.VAULTS_DELETE, p(vaults.delete, deps))
        .handle(StoreOps.CREDENTIALS_GET, p(credentials.get, deps))
        .handle(StoreOps.CREDENTIALS_LIST, p(credentials.list_, deps))
        .handle(StoreOps.CREDENTIALS_SAVE, p(credentials.save, deps))
        .handle(StoreOps.CREDENTIALS_DELETE, p(credentials.delete, deps))
        .handle(StoreOps.SESSIONS_CREATE, p(sessions.create, deps))
        .handle(StoreOps.SESSIONS_GET, p(sessions.get, deps))
        .handle(StoreOps.SESSIONS_UPDATE, p(sessions.update, deps))
        .handle(StoreOps.SESSIONS_RESOURCE_UPDATE, p(sessions.resource_update, deps))
        .handle(StoreOps.SESSIONS_LIST, p(sessions.list_, deps))
        .handle(StoreOps.SESSIONS_ARCHIVE, p(sessions.archive, deps))
        .handle(StoreOps.SESSIONS_DELETE, p(sessions.delete, deps))
        .handle(StoreOps.SESSIONS_CONTEXT, p(sessions.context, deps))
        .handle(StoreOps.EVENTS_APPEND, p(events.append, deps))
        .handle(StoreOps.EVENTS_LIST, p(events.list_, deps))
    )
