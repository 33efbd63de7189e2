"""Session repositories seen from the gateway: their tokens leave the request here.

A ``github_repository`` resource's ``authorization_token`` is a secret. ``take_tokens`` takes every
one out of a ``sessions.create`` request and gives each repository its id, so that what goes on to
the session-store (and from there into the session log and Postgres) is metadata alone; each token
goes straight to the credential-proxy (``RepositoryOps.REGISTER``, one core NATS request, never a
stream), which keeps it in OpenBao. The gateway never logs a request body.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from corral.bus import Bus, BusError, NoResponders, unanswered
from corral.contracts import ids
from corral.contracts.api.errors import ApiError, invalid
from corral.contracts.repositories import (
    MAX_TOKEN_CHARS,
    ForgetRepositories,
    RegisterRepository,
    RepositoryOps,
)
from corral.gateway.errors import Unavailable, unanswered_error

logger = logging.getLogger(__name__)

REPOSITORY: Final = "github_repository"
_TIMEOUT_S: Final = 10.0


class RepositoryTokens(Protocol):
    async def register(self, resource_id: str, url: str, token: str | None) -> None: ...

    async def forget(self, resource_ids: list[str]) -> None: ...


@dataclass
class Taken:
    """A create request's resources without their tokens, and the tokens by resource id."""

    resources: list[dict[str, Any]]
    tokens: dict[str, str | None] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)


def check_token(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid(f"{where}: must be a non-empty string")
    if len(value) > MAX_TOKEN_CHARS:
        raise invalid(f"{where}: is longer than {MAX_TOKEN_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in value):
        raise invalid(f"{where}: must not contain whitespace or control characters")
    return value


def take_tokens(resources: list[Any]) -> Taken:
    """Each ``github_repository`` gets a fresh ``id`` and loses its ``authorization_token``."""
    taken = Taken(resources=[])
    for index, resource in enumerate(resources):
        if not isinstance(resource, dict) or resource.get("type") != REPOSITORY:
            taken.resources.append(resource)
            continue
        kept = {k: v for k, v in resource.items() if k not in ("authorization_token", "id")}
        token = resource.get("authorization_token")
        if token is not None:
            token = check_token(token, f"resources.{index}.authorization_token")
        url = resource.get("url")
        if not isinstance(url, str) or not url:
            raise invalid(f"resources.{index}.url: must be the repository's https:// url")
        resource_id = ids.new_id(ids.SESSION_RESOURCE)
        kept["id"] = resource_id
        taken.resources.append(kept)
        taken.tokens[resource_id] = token
        taken.urls[resource_id] = url
    return taken


class BusRepositoryTokens:
    """``RepositoryTokens`` over ``RepositoryOps`` (the credential-proxy)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def register(self, resource_id: str, url: str, token: str | None) -> None:
        """Raises: ApiError: the url is refused (400), or the credential-proxy is unavailable (503)."""
        request = RegisterRepository(resource_id=resource_id, url=url, authorization_token=token)
        await self._call(RepositoryOps.REGISTER, request)

    async def forget(self, resource_ids: list[str]) -> None:
        """Best effort: a failure is logged (the tokens stay in OpenBao, unreachable by any sandbox)."""
        if not resource_ids:
            return
        try:
            await self._call(RepositoryOps.FORGET, ForgetRepositories(resource_ids=resource_ids))
        except ApiError as exc:
            logger.warning("repository tokens not forgotten", extra={"fields": {"error": exc.message}})

    async def _call(self, op: Any, request: Any) -> Any:
        try:
            return await self._bus.call(op, request, timeout=_TIMEOUT_S)
        except NoResponders as exc:
            raise Unavailable(
                "overloaded_error",
                "the credential-proxy is unavailable, so repository credentials cannot be stored; retry shortly",
            ) from exc
        except TimeoutError as exc:
            raise unanswered_error(f"the credential-proxy (waited {_TIMEOUT_S:g}s)") from exc
        except BusError as exc:
            if unanswered(exc):  # a request body spilled to a bucket whose stream did not answer
                raise unanswered_error("the event log (NATS)") from exc
            raise ApiError("api_error", "the credential-proxy's reply was unreadable; retry shortly") from exc


async def register_all(tokens: RepositoryTokens, taken: Taken) -> None:
    """Register every repository of ``taken``; on a refusal, forget those already registered.

    Raises:
        ApiError: a url refused (naming the resource's index), or the credential-proxy unavailable.
    """
    done: list[str] = []
    try:
        for index, resource_id in enumerate(taken.tokens):
            try:
                await tokens.register(resource_id, taken.urls[resource_id], taken.tokens[resource_id])
            except ApiError as exc:
                if exc.status == 400:
                    where = [i for i, r in enumerate(taken.resources) if r.get("id") == resource_id]
                    at = where[0] if where else index
                    raise ApiError(exc.error_type, f"resources.{at}.{exc.message}", error_code=exc.error_code) from None
                raise
            done.append(resource_id)
    except BaseException:
        await tokens.forget(done)
        raise
