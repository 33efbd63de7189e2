"""The session-store, seen from the gateway: one typed request-reply call per operation.

``await store.call(Op.AGENTS_CREATE, CreateObject(...))`` sends the request model's JSON to
``corral.rpc.store.agents.create`` and returns the reply's ``result``; an error reply is raised as
the ``ApiError`` it describes, so the client sees the session-store's status and message as is.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from pydantic import ValidationError

from corral.bus import Bus, NoResponders, PayloadTooLarge
from corral.contracts.api.errors import ApiError
from corral.contracts.rpc import Message, RpcReply
from corral.contracts.subjects import store_rpc
from corral.gateway.errors import Unavailable

logger = logging.getLogger(__name__)


class Store(Protocol):
    async def call(self, op: str, request: Message) -> Any:
        """Run ``op`` and return its result.

        Raises:
            ApiError: the session-store refused the request (its status and message), or it is
                unavailable (``Unavailable``, 503).
        """
        ...


class BusStore:
    """``Store`` over NATS request-reply (queue group ``session-store``)."""

    def __init__(self, bus: Bus, *, timeout_s: float) -> None:
        self._bus = bus
        self._timeout_s = timeout_s

    async def call(self, op: str, request: Message) -> Any:
        subject = store_rpc(op)
        try:
            raw = await self._bus.request(subject, request.model_dump_json().encode(), timeout=self._timeout_s)
        except PayloadTooLarge as exc:
            raise ApiError(
                "request_too_large",
                f"the request to {op} is {exc.size} bytes, more than the {exc.limit} bytes the bus carries; send less",
            ) from exc
        except NoResponders as exc:
            raise Unavailable(
                "overloaded_error", f"the session-store is unavailable (nothing serves {subject}); start it and retry"
            ) from exc
        except TimeoutError as exc:
            raise Unavailable(
                "api_error",
                f"the session-store did not answer {op} within {self._timeout_s:g}s; "
                "the request may or may not have been applied",
            ) from exc
        return result_of(op, raw)


def result_of(op: str, raw: bytes) -> Any:
    """The ``result`` of an ``RpcReply``, or its error raised as ``ApiError``."""
    try:
        reply = RpcReply.model_validate_json(raw)
    except ValidationError as exc:
        logger.error("malformed reply to %s: %s", op, exc.errors(include_url=False)[:3])
        raise ApiError("api_error", f"the session-store sent a malformed reply to {op}") from exc
    if reply.ok:
        return reply.result
    if reply.error is None:
        raise ApiError("api_error", f"the session-store failed {op} without saying why")
    raise ApiError.from_detail(reply.error)
