"""The session-store, seen from the gateway: ``await store.call(StoreOps.AGENTS_CREATE, CreateObject(...))``.

Each operation is a descriptor in ``corral.contracts.rpc.StoreOps`` (subject, request model, reply
type); ``BusStore`` asks it through ``Bus.call`` and returns the typed reply. An error reply is raised
as the ``ApiError`` it describes, so the client sees the session-store's status and message as is.
"""

from __future__ import annotations

import logging
from typing import Protocol, TypeVar

from pydantic import BaseModel

from corral.bus import Bus, NoResponders, PayloadTooLarge, UnreadableReply
from corral.contracts.api.errors import ApiError
from corral.contracts.operation import Operation
from corral.gateway.errors import Unavailable, unanswered_error

logger = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep")


class Store(Protocol):
    async def call(self, op: Operation[Req, Rep], request: Req) -> Rep:
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

    async def call(self, op: Operation[Req, Rep], request: Req) -> Rep:
        try:
            return await self._bus.call(op, request, timeout=self._timeout_s)
        except PayloadTooLarge as exc:
            raise ApiError(
                "request_too_large",
                f"the request to {op.name} is {exc.size} bytes, more than the {exc.limit} bytes the bus carries; "
                "send less",
            ) from exc
        except NoResponders as exc:
            raise Unavailable(
                "overloaded_error",
                f"the {op.service} is unavailable (nothing serves {op.subject}); start it and retry",
            ) from exc
        except TimeoutError as exc:  # nats-py's, or the bus's own (a spilled body's store not answering)
            raise unanswered_error(f"the {op.service} (asked {op.name}, waited {self._timeout_s:g}s)") from exc
        except UnreadableReply as exc:
            raise ApiError("api_error", f"the {op.service} sent a malformed reply to {op.name}") from exc
