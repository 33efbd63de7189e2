"""FastAPI dependencies every API route declares: the caller's workspace and the backends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from corral.contracts.api.errors import invalid
from corral.contracts.rpc import ResolvedKey
from corral.gateway.auth import check_workspace, require_admin, resolve
from corral.gateway.feed import SessionFeed
from corral.gateway.repositories import RepositoryTokens
from corral.gateway.settings import Settings
from corral.gateway.state import GatewayState, gateway_state
from corral.gateway.store import Store


async def authorize(state: GatewayState, headers: Mapping[str, str]) -> ResolvedKey:
    """The request's API key, allowed in the workspace it names and within its rate limit.

    Raises:
        ApiError: 503 before the bus is connected, 401 for a missing or unknown key, 403 for another
            workspace, 429 over the key's rate limit.
    """
    backends = state.ready()
    caller = await resolve(headers, store=backends.store, cache=state.keys, directory=backends.directory)
    check_workspace(headers, caller)
    if state.limiter is not None:
        state.limiter.check(caller.key_id, caller.rate_limit)
    return caller


async def _caller(request: Request) -> ResolvedKey:
    return await authorize(gateway_state(request), request.headers)


async def _admin(request: Request) -> ResolvedKey:
    state = gateway_state(request)
    backends = state.ready()
    caller = await resolve(request.headers, store=backends.store, cache=state.keys, directory=backends.directory)
    require_admin(caller)
    if state.limiter is not None:
        state.limiter.check(caller.key_id, caller.rate_limit)
    return caller


# Dependencies are coroutines on purpose: FastAPI runs plain functions in a worker thread, a hop
# that cost more than the rest of a cached request.
async def _store(request: Request) -> Store:
    return gateway_state(request).ready().store


async def _feed(request: Request) -> SessionFeed:
    return gateway_state(request).ready().feed


async def _repositories(request: Request) -> RepositoryTokens:
    tokens = gateway_state(request).ready().repositories
    if tokens is None:
        raise invalid("resources: repositories are not available in this deployment (no credential-proxy)")
    return tokens


async def _settings(request: Request) -> Settings:
    return gateway_state(request).settings


Caller = Annotated[ResolvedKey, Depends(_caller)]
"""The authenticated API key (401 before anything else runs when it is missing or unknown; 403 when
the request names another workspace than the key's in ``anthropic-workspace-id``)."""

AdminCaller = Annotated[ResolvedKey, Depends(_admin)]
"""An API key with role ``admin`` (401 when missing or unknown, 403 for any other key)."""

StoreClient = Annotated[Store, Depends(_store)]
Feed = Annotated[SessionFeed, Depends(_feed)]
Repositories = Annotated[RepositoryTokens, Depends(_repositories)]
GatewaySettings = Annotated[Settings, Depends(_settings)]
