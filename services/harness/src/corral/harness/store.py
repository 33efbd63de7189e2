"""The session-store port: append events under the lease (reads go to the log itself: ``sessionlog``).

``BusStore`` speaks the store's request-reply operation ``corral.rpc.store.events.append``. Failures
come back as one of three ``StoreError`` kinds, each saying what the caller should do next:

    StoreError
    ├── LeaseConflict     409 about the lease (``lease_lost``, ``lease_required``, or no code): the lease
    │                     is not ours any more; stop working on the session
    ├── StoreUnavailable  no responder, timeout, a 429 or a 5xx: try again later
    └── StoreRejected     any other refusal (session gone, an event the session's state does not
                          allow): retrying the same thing will not help
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from corral.bus import Bus, BusError
from corral.contracts import rpc, subjects
from corral.contracts.api.errors import STATUS_FOR, ErrorDetail
from corral.harness.events import EventDict

logger = logging.getLogger(__name__)

_Result = TypeVar("_Result", bound=BaseModel)


class StoreError(Exception):
    pass


class LeaseConflict(StoreError):
    pass


class StoreUnavailable(StoreError):
    pass


class StoreRejected(StoreError):
    pass


class Store(Protocol):
    async def append(self, session_id: str, events: Sequence[EventDict], *, lease: rpc.Lease) -> rpc.Appended: ...


_LEASE_CODES = frozenset({None, "lease_lost", "lease_required"})


def error_for(detail: ErrorDetail) -> StoreError:
    """The ``StoreError`` an error reply stands for."""
    status = STATUS_FOR.get(detail.type, 500)
    code = (detail.details or {}).get("error_code")
    text = f"{detail.type} ({code}): {detail.message}" if code else f"{detail.type}: {detail.message}"
    if status == 409 and code in _LEASE_CODES:
        return LeaseConflict(text)
    if status >= 500 or status == 429:
        return StoreUnavailable(text)
    return StoreRejected(text)


class BusStore:
    def __init__(self, bus: Bus, *, timeout_s: float | None = None) -> None:
        self._bus = bus
        self._timeout_s = timeout_s

    async def append(self, session_id: str, events: Sequence[EventDict], *, lease: rpc.Lease) -> rpc.Appended:
        request = rpc.AppendEvents(
            workspace_id=None,
            session_id=session_id,
            events=list(events),
            origin="harness",
            lease=lease,
            dedupe_keys=[str(event["id"]) for event in events],
        )
        return await self._call(rpc.Op.EVENTS_APPEND, request, rpc.Appended)

    async def _call(self, op: str, message: BaseModel, result: type[_Result]) -> _Result:
        try:
            raw = await self._bus.request(
                subjects.store_rpc(op), message.model_dump_json().encode(), timeout=self._timeout_s
            )
        except (TimeoutError, BusError) as exc:
            raise StoreUnavailable(f"session-store did not answer {op}: {type(exc).__name__}") from exc
        try:
            reply = rpc.RpcReply.model_validate_json(raw)
            if not reply.ok:
                raise error_for(reply.error or ErrorDetail(type="api_error", message="error reply without detail"))
            return result.model_validate(reply.result)
        except ValidationError as exc:
            raise StoreRejected(f"unreadable reply to {op}: {exc.error_count()} validation errors") from exc
