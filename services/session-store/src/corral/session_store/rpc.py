"""Request-reply: one subject per operation, each decoded into its request model and answered with
an ``RpcReply``. An ``ApiError`` becomes the reply's error; anything unexpected becomes an
``api_error`` that names no internals (the traceback goes to the log)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.api.errors import ApiError, ErrorDetail
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
    RpcReply,
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


def _field_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


async def handle(deps: Deps, op: str, data: bytes) -> bytes:
    model, handler = ROUTES[op]
    try:
        request = model.model_validate_json(data)
        result = await handler(deps, request)
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        reply = RpcReply(ok=True, result=result)
    except ApiError as exc:
        reply = RpcReply(ok=False, error=exc.detail())
    except ValidationError as exc:
        reply = RpcReply(ok=False, error=ErrorDetail(type="invalid_request_error", message=_field_message(exc)))
    except UNAVAILABLE as exc:
        logger.warning("database unavailable", extra={"fields": {"op": op, "error": type(exc).__name__}})
        reply = RpcReply(
            ok=False,
            error=ErrorDetail(
                type="overloaded_error", message=f"{op}: Corral's database is unavailable right now; retry shortly"
            ),
        )
    except Exception:
        logger.exception("operation failed", extra={"fields": {"op": op}})
        reply = RpcReply(ok=False, error=ErrorDetail(type="api_error", message=f"{op} failed inside the session store"))
    return reply.model_dump_json().encode()


@contextlib.asynccontextmanager
async def serve_all(bus: Bus, deps: Deps) -> AsyncIterator[None]:
    """Serve every operation on its subject (queue group ``session-store``) while the block runs."""
    async with contextlib.AsyncExitStack() as stack:
        for op in ROUTES:

            async def handler(data: bytes, _headers: dict[str, str], op: str = op) -> bytes:
                return await handle(deps, op, data)

            await stack.enter_async_context(bus.serve(subjects.store_rpc(op), handler, queue=subjects.STORE_QUEUE))
        yield
