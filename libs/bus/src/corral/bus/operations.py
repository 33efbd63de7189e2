"""Serving a service's request-reply operations, each declared once as an ``Operation`` descriptor
(``corral.contracts.operation``): ``Operations(service=...).handle(OP, handler)`` for each, then
``async with ops.serve(bus)``. Each request is answered on the descriptor's subject in its queue
group, decoded into its request model, run, and answered with an ``RpcReply`` (a bare reply model for
``enveloped=False`` operations such as health), inside a server span joined to the caller's trace.

Every failure is an error reply, never silence on the wire:

- a request that does not validate is an ``invalid_request_error`` naming the first bad field;
- an ``ApiError`` is answered as it says (its type and ``error_code``);
- a record or a reply larger than the bus carries (``PayloadTooLarge``) is a ``request_too_large``;
- a reply larger than one message is sent whole through the bodies object store (see ``Bus.serve``),
  except for ``bounded`` operations: theirs is answered ``request_too_large`` naming
  the size and the limit, at once;
- a handler that raises past all this, or a reply the connection cannot send, is answered by
  ``Bus.serve`` with an ``api_error`` (the subject in the log), never left to the caller's deadline;
- a bus that did not answer the handler (``unanswered``: NATS paused or restarting, a stream electing
  a leader) is an ``overloaded_error`` with ``error_code`` ``bus_unanswered``: the outcome is unknown,
  the same request retried shortly (with the same ``Idempotency-Key``) is applied at most once;
- an exception the service's ``translate`` knows (a database outage, an engine that is down) is
  answered with the detail it returns;
- anything else is logged with its traceback and answered ``api_error`` naming no internals.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from corral import telemetry
from corral.bus import metrics
from corral.bus.client import Bus
from corral.bus.errors import PayloadTooLarge, unanswered
from corral.contracts.api.errors import BUS_UNANSWERED, ApiError, ErrorDetail
from corral.contracts.operation import Operation
from corral.contracts.rpc import RpcReply

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep")

Handler = Callable[[Req], Awaitable[Rep]]
"""Runs one decoded request; returns the reply's ``result``."""
Translate = Callable[[Exception], ErrorDetail | None]
"""The error detail for an exception the service expects (``None``: unexpected, logged)."""
Describe = Callable[[BaseModel, Any, trace.Span], None]
"""Adds attributes to an operation's span: called with ``(request, None, span)`` once the request is
decoded, and with ``(request, result, span)`` when it succeeded."""


def _nothing_expected(_exc: Exception) -> ErrorDetail | None:
    return None


@dataclass
class Operations:
    """A service's operations, keyed by descriptor: add each with ``handle``, then ``serve``."""

    service: str
    translate: Translate = field(default=_nothing_expected)
    describe: Describe | None = None
    _handlers: dict[Operation[Any, Any], Callable[[Any], Awaitable[Any]]] = field(default_factory=dict)

    def handle(self, op: Operation[Req, Rep], handler: Handler[Req, Rep]) -> Operations:
        """Answer ``op`` with ``handler`` (its request and reply types must be the descriptor's)."""
        if op in self._handlers:
            raise ValueError(f"{op.name} ({op.subject}) is handled twice")
        self._handlers[op] = handler
        return self

    @property
    def operations(self) -> tuple[Operation[Any, Any], ...]:
        return tuple(self._handlers)

    async def answer(self, op: Operation[Any, Any], data: bytes, headers: Mapping[str, str]) -> bytes:
        """Decode, run and answer one request of ``op``."""
        started = time.perf_counter()
        outcome = "api_error"  # until it is known: an exception escaping here is answered as one
        try:
            reply = await self._answer(op, data, headers)
            outcome = reply[1]
            return reply[0]
        finally:
            metrics.RPC_REQUESTS.labels(operation=op.name, outcome=outcome).inc()
            metrics.RPC_DURATION.labels(operation=op.name).observe(time.perf_counter() - started)

    async def _answer(self, op: Operation[Any, Any], data: bytes, headers: Mapping[str, str]) -> tuple[bytes, str]:
        with _tracer.start_as_current_span(
            f"process {op.subject}",
            context=telemetry.extract(dict(headers)),
            kind=trace.SpanKind.SERVER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": op.subject,
            },
        ) as span:
            if not op.enveloped:
                # a bare reply (health): a failure is left to ``Bus.serve``, which answers ``api_error``
                request = op.request.model_validate_json(data or b"{}")
                result = await self._handlers[op](request)
                return _bare(op, result), "ok"
            reply = await self._run(op, data, span)
            if reply.error is not None:
                span.set_attribute("error.type", reply.error.type)
            return reply.model_dump_json().encode(), reply.error.type if reply.error is not None else "ok"

    async def _run(self, op: Operation[Any, Any], data: bytes, span: trace.Span) -> RpcReply:
        handler = self._handlers[op]
        try:
            request = op.request.model_validate_json(data)
            if self.describe is not None:
                self.describe(request, None, span)
            result = await handler(request)
            if self.describe is not None:
                self.describe(request, result, span)
            return RpcReply(ok=True, result=op.dump_reply(result))
        except ApiError as exc:
            return RpcReply(ok=False, error=exc.detail())
        except ValidationError as exc:
            return RpcReply(ok=False, error=ErrorDetail(type="invalid_request_error", message=field_message(exc)))
        except PayloadTooLarge as exc:
            message = (
                f"{op.name} would store a record of {exc.size} bytes, more than the {exc.limit} bytes one record "
                "can hold; send less (split a long text into several messages)"
            )
            return RpcReply(ok=False, error=ErrorDetail(type="request_too_large", message=message))
        except Exception as exc:
            if unanswered(exc):
                return RpcReply(ok=False, error=self._unanswered(op, exc))
            detail = self.translate(exc)
            if detail is not None:
                return RpcReply(ok=False, error=detail)
            logger.exception("operation failed", extra={"fields": {"op": op.name, "subject": op.subject}})
            return RpcReply(
                ok=False, error=ErrorDetail(type="api_error", message=f"{op.name} failed inside the {self.service}")
            )

    def _unanswered(self, op: Operation[Any, Any], exc: Exception) -> ErrorDetail:
        logger.warning(
            "bus did not answer", extra={"fields": {"op": op.name, "subject": op.subject, "error": type(exc).__name__}}
        )
        message = (
            f"the {self.service} got no answer from the event log (NATS) in time for {op.name}: a server is "
            "restarting or a stream is electing a new leader, so the request may or may not have been applied; "
            "retry in a few seconds with the same Idempotency-Key"
        )
        return ErrorDetail(type="overloaded_error", message=message, details={"error_code": BUS_UNANSWERED})

    @contextlib.asynccontextmanager
    async def serve(self, bus: Bus) -> AsyncIterator[None]:
        """Answer every operation on its subject (in its queue group) while the block runs."""
        async with contextlib.AsyncExitStack() as stack:
            for op in self._handlers:

                async def handler(data: bytes, headers: dict[str, str], op: Operation[Any, Any] = op) -> bytes:
                    return await self.answer(op, data, headers)

                await stack.enter_async_context(
                    bus.serve(
                        op.subject,
                        handler,
                        queue=op.queue,
                        too_large=functools.partial(_too_large, op.name) if op.enveloped else None,
                        large_replies=not op.bounded,
                    )
                )
            yield


def _bare(op: Operation[Any, Any], result: Any) -> bytes:
    if isinstance(result, BaseModel):
        return result.model_dump_json().encode()
    return json.dumps(op.dump_reply(result)).encode()


def _too_large(op: str, size: int, limit: int) -> bytes:
    message = (
        f"the answer to {op} is {size} bytes, over the limit of {limit} bytes one bus message carries "
        "(NATS max_payload), and this operation answers in one message; ask for less"
    )
    return RpcReply(ok=False, error=ErrorDetail(type="request_too_large", message=message)).model_dump_json().encode()


def field_message(exc: ValidationError) -> str:
    """``<where>: <what>`` for the first error of a validation failure."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"
