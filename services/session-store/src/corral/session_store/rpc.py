"""Request-reply: the session-store's operations, served by ``corral.bus.Operations`` (an
``ApiError`` becomes the reply's error, a database outage an ``overloaded_error`` to retry, anything
unexpected an ``api_error`` naming no internals)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from corral.bus import Operations
from corral.contracts import subjects
from corral.contracts.api.errors import ErrorDetail
from corral.contracts.rpc import (
    AppendEvents,
    CreateApiKey,
    CreateObject,
    GetContext,
    GetObject,
    ListEvents,
    ListObjects,
    ObjectAction,
    Op,
    ResolveKey,
    UpdateObject,
)
from corral.session_store.db import UNAVAILABLE
from corral.session_store.handlers import agents, auth, environments, events, sessions
from corral.session_store.service import Deps

logger = logging.getLogger(__name__)

Route = tuple[type[BaseModel], Callable[[Deps, Any], Awaitable[Any]]]

ROUTES: dict[str, Route] = {
    Op.AUTH_RESOLVE: (ResolveKey, auth.resolve),
    Op.API_KEYS_CREATE: (CreateApiKey, auth.create),
    Op.AGENTS_CREATE: (CreateObject, agents.create),
    Op.AGENTS_GET: (GetObject, agents.get),
    Op.AGENTS_UPDATE: (UpdateObject, agents.update),
    Op.AGENTS_LIST: (ListObjects, agents.list_),
    Op.AGENTS_ARCHIVE: (ObjectAction, agents.archive),
    Op.AGENTS_VERSIONS: (ListObjects, agents.versions),
    Op.ENVIRONMENTS_CREATE: (CreateObject, environments.create),
    Op.ENVIRONMENTS_GET: (GetObject, environments.get),
    Op.ENVIRONMENTS_UPDATE: (UpdateObject, environments.update),
    Op.ENVIRONMENTS_LIST: (ListObjects, environments.list_),
    Op.ENVIRONMENTS_ARCHIVE: (ObjectAction, environments.archive),
    Op.ENVIRONMENTS_DELETE: (ObjectAction, environments.delete),
    Op.SESSIONS_CREATE: (CreateObject, sessions.create),
    Op.SESSIONS_GET: (GetObject, sessions.get),
    Op.SESSIONS_UPDATE: (UpdateObject, sessions.update),
    Op.SESSIONS_LIST: (ListObjects, sessions.list_),
    Op.SESSIONS_ARCHIVE: (ObjectAction, sessions.archive),
    Op.SESSIONS_DELETE: (ObjectAction, sessions.delete),
    Op.SESSIONS_CONTEXT: (GetContext, sessions.context),
    Op.EVENTS_APPEND: (AppendEvents, events.append),
    Op.EVENTS_LIST: (ListEvents, events.list_),
}


def _translate(exc: Exception) -> ErrorDetail | None:
    if isinstance(exc, UNAVAILABLE):
        logger.warning("database unavailable", extra={"fields": {"error": type(exc).__name__}})
        return ErrorDetail(type="overloaded_error", message="Corral's database is unavailable right now; retry shortly")
    return None


def operations(deps: Deps) -> Operations:
    """Every operation on its subject (queue group ``session-store``)."""
    return Operations(
        service="session store",
        routes={op: (model, functools.partial(handler, deps)) for op, (model, handler) in ROUTES.items()},
        subject=subjects.store_rpc,
        queue=subjects.STORE_QUEUE,
        translate=_translate,
        # The whole log in one answer: a long session's cannot be sent, and says so.
        bounded=frozenset({Op.SESSIONS_CONTEXT}),
    )
