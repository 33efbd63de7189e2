"""Request-reply: the ``RepositoryOps`` operations (``corral.rpc.repositories.<op>``, queue group
``credential-proxy``): ``register`` (a token kept, or rotated), ``forget``, ``check``.

``register`` carries a token: it arrives on core NATS (bounded: one message, never the bodies
store), is written to OpenBao and answered with whether a token is kept, never the token itself.
No request field is put on a span or a log line besides the resource id.
"""

from __future__ import annotations

import functools
from typing import Any

from opentelemetry import trace
from pydantic import BaseModel

from corral.bus import Operations
from corral.contracts.api.errors import ErrorDetail
from corral.contracts.repositories import (
    CheckRepository,
    ForgetRepositories,
    RegisterRepository,
    RepositoriesForgotten,
    RepositoryChecked,
    RepositoryOps,
    RepositoryRegistered,
)
from corral.credential_proxy.repositories import Repositories, VaultUnavailable


async def register(repositories: Repositories, request: RegisterRepository) -> RepositoryRegistered:
    has_token = await repositories.register(request)
    return RepositoryRegistered(resource_id=request.resource_id, has_token=has_token)


async def forget(repositories: Repositories, request: ForgetRepositories) -> RepositoriesForgotten:
    return RepositoriesForgotten(forgotten=await repositories.forget(request.resource_ids))


async def check(repositories: Repositories, request: CheckRepository) -> RepositoryChecked:
    return RepositoryChecked(problem=await repositories.check(request))


def _translate(exc: Exception) -> ErrorDetail | None:
    if isinstance(exc, VaultUnavailable):
        return ErrorDetail(type="api_error", message=str(exc), details={"error_code": "vault_unavailable"})
    return None


def _describe(request: BaseModel, _result: Any, span: trace.Span) -> None:
    resource_id = getattr(request, "resource_id", None)
    if isinstance(resource_id, str):
        span.set_attribute("corral.resource_id", resource_id)


def repository_operations(repositories: Repositories) -> Operations:
    return (
        Operations(service="credential-proxy", translate=_translate, describe=_describe)
        .handle(RepositoryOps.REGISTER, functools.partial(register, repositories))
        .handle(RepositoryOps.FORGET, functools.partial(forget, repositories))
        .handle(RepositoryOps.CHECK, functools.partial(check, repositories))
    )
