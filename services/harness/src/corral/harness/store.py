"""The session-store port: append events under the lease (reads go to the log itself: ``sessionlog``).

``BusStore`` asks the store's ``events.append`` operation through its descriptor
(``StoreOps.EVENTS_APPEND``, with ``Bus.call``). Events arrive typed (``HarnessEvent``: a malformed
one could not have been built) and are serialised here, once, into the request. Failures come back
as one of four ``StoreError`` kinds, each saying what the caller should do next:

    StoreError
    ├── LeaseConflict     409 about the lease (``lease_lost``, ``lease_required``, or no code): the lease
    │                     is not ours any more; stop working on the session
    ├── StoreUnavailable  no responder, timeout, a 429 or a 5xx, or a 409 ``append_interrupted`` (a
    │                     prefix of the append is stored): try again later, from the log as it is
    ├── LogMoved          409 ``wrong_last_sequence``: an append fenced on the log position its step
    │                     was decided on found the log moved on; or 409 ``wrong_status``: the session's
    │                     status in the log does not allow the step (it was decided on a fold behind
    │                     the log: a lookup of its end answered behind it, after a partition);
    │                     nothing stored either way: catch up, decide again
    └── StoreRejected     any other refusal (session gone, an event the session's state does not
                          allow): retrying the same thing will not help
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, TypeVar

from pydantic import BaseModel

from corral.bus import Bus, BusError, UnreadableReply
from corral.contracts import rpc
from corral.contracts.api.errors import STATUS_FOR, ApiError, ErrorDetail
from corral.contracts.api.events import HarnessEvent
from corral.contracts.operation import Operation
from corral.harness.events import wire

logger = logging.getLogger(__name__)

_Req = TypeVar("_Req", bound=BaseModel)
_Rep = TypeVar("_Rep")


class StoreError(Exception):
    pass


class LeaseConflict(StoreError):
    pass


class StoreUnavailable(StoreError):
    pass


class StoreRejected(StoreError):
    pass


class LogMoved(StoreError):
    pass


class Store(Protocol):
    async def append(
        self,
        session_id: str,
        events: Sequence[HarnessEvent],
        *,
        lease: rpc.Lease,
        expected_last_seq: int | None = None,
    ) -> rpc.Appended: ...


_LEASE_CODES = frozenset({None, "lease_lost", "lease_required"})


def error_for(detail: ErrorDetail) -> StoreError:
    """The ``StoreError`` an error reply stands for."""
    status = STATUS_FOR.get(detail.type, 500)
    code = (detail.details or {}).get("error_code")
    text = f"{detail.type} ({code}): {detail.message}" if code else f"{detail.type}: {detail.message}"
    if status == 409 and code in ("wrong_last_sequence", "wrong_status"):
        return LogMoved(text)
    if status == 409 and code == "append_interrupted":  # a prefix is stored: the next run reads it
        return StoreUnavailable(text)
    if status == 409 and code in _LEASE_CODES:
        return LeaseConflict(text)
    if status >= 500 or status == 429:
        return StoreUnavailable(text)
    return StoreRejected(text)


class BusStore:
    def __init__(self, bus: Bus, *, timeout_s: float | None = None) -> None:
        self._bus = bus
        self._timeout_s = timeout_s

    async def append(
        self,
        session_id: str,
        events: Sequence[HarnessEvent],
        *,
        lease: rpc.Lease,
        expected_last_seq: int | None = None,
    ) -> rpc.Appended:
        request = rpc.AppendEvents(
            workspace_id=None,
            session_id=session_id,
            events=[wire(event) for event in events],
            origin="harness",
            lease=lease,
            dedupe_keys=[event.id for event in events],
            expected_last_seq=expected_last_seq,
        )
        return await self._call(rpc.StoreOps.EVENTS_APPEND, request)

    async def _call(self, op: Operation[_Req, _Rep], request: _Req) -> _Rep:
        try:
            return await self._bus.call(op, request, timeout=self._timeout_s)
        except ApiError as exc:
            raise error_for(exc.detail()) from exc
        except UnreadableReply as exc:
            raise StoreRejected(str(exc)) from exc
        except (TimeoutError, BusError) as exc:
            raise StoreUnavailable(f"session-store did not answer {op.name}: {type(exc).__name__}") from exc
