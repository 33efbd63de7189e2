"""Serving a service's request-reply operations: one subject per operation, each request decoded
into its model, run, and answered with an ``RpcReply``, inside a server span joined to the caller's
trace.

Every failure is an error reply, never silence on the wire:

- a request that does not validate is an ``invalid_request_error`` naming the first bad field;
- an ``ApiError`` is answered as it says (its type and ``error_code``);
- a record or a reply larger than the bus carries (``PayloadTooLarge``) is a ``request_too_large``;
- a reply larger than one message is sent whole through the bodies object store (see ``Bus.serve``),
  except for the operations listed in ``bounded``: theirs is answered ``request_too_large`` naming
  the size and the limit, at once;
- a handler that raises past all this, or a reply the connection cannot send, is answered by
  ``Bus.serve`` with an ``api_error`` (the subject in the log), never left to the caller's deadline;
- an exception the service's ``translate`` knows (a database outage, an engine that is down) is
  answered with the detail it returns;
- anything else is logged with its traceback and answered ``api_error`` naming no internals.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from corral import telemetry
from corral.bus.client import Bus
from corral.bus.errors import PayloadTooLarge
from corral.contracts.api.errors import ApiError, ErrorDetail
from corral.contracts.rpc import RpcReply

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)

Handler = Callable[[Any], Awaitable[Any]]
"""Runs one decoded request; returns a model (or plain JSON data) for the reply's ``result``."""
Translate = Callable[[Exception], ErrorDetail | None]
"""The error detail for an exception the service expects (``None``: unexpected, logged)."""
Describe = Callable[[BaseModel, Any, trace.Span], None]
"""Adds attributes to an operation's span from its request and (when it succeeded) its result."""


def _nothing_expected(_exc: Exception) -> ErrorDetail | None:
    return None


@dataclass(frozen=True)
class Operations:
    """A service's operations: ``routes`` maps an operation name to its request model and handler."""

    service: str
    routes: Mapping[str, tuple[type[BaseModel], Handler]]
    subject: Callable[[str], str]
    queue: str
    translate: Translate = field(default=_nothing_expected)
    describe: Describe | None = None
    bounded: frozenset[str] = frozenset()
    """Operations whose reply must fit one bus message (``max_payload``); every other reply may be of
    any size."""

    async def answer(self, op: str, data: bytes, headers: Mapping[str, str]) -> bytes:
        """Decode, run and answer one request of operation ``op``."""
        subject = self.subject(op)
        with _tracer.start_as_current_span(
            f"process {subject}",
            context=telemetry.extract(dict(headers)),
            kind=trace.SpanKind.SERVER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": subject,
            },
        ) as span:
            reply = await self._run(op, data, span)
            if reply.error is not None:
                span.set_attribute("error.type", reply.error.type)
            return reply.model_dump_json().encode()

    async def _run(self, op: str, data: bytes, span: trace.Span) -> RpcReply:
        model, handler = self.routes[op]
        try:
            request = model.model_validate_json(data)
            result = await handler(request)
            if self.describe is not None:
                self.describe(request, result, span)
            if isinstance(result, BaseModel):
                result = result.model_dump(mode="json")
            return RpcReply(ok=True, result=result)
        except ApiError as exc:
            return RpcReply(ok=False, error=exc.detail())
        except ValidationError as exc:
            return RpcReply(ok=False, error=ErrorDetail(type="invalid_request_error", message=field_message(exc)))
        except PayloadTooLarge as exc:
            message = (
                f"{op} would store a record of {exc.size} bytes, more than the {exc.limit} bytes one record "
                "can hold; send less (split a long text into several messages)"
            )
            return RpcReply(ok=False, error=ErrorDetail(type="request_too_large", message=message))
        except Exception as exc:
            detail = self.translate(exc)
            if detail is not None:
                return RpcReply(ok=False, error=detail)
            logger.exception("operation failed", extra={"fields": {"op": op}})
            return RpcReply(
                ok=False, error=ErrorDetail(type="api_error", message=f"{op} failed inside the {self.service}")
            )

    @contextlib.asynccontextmanager
    async def serve(self, bus: Bus) -> AsyncIterator[None]:
        """Answer every operation on its subject (in the queue group) while the block runs."""
        async with contextlib.AsyncExitStack() as stack:
            for op in self.routes:

                async def handler(data: bytes, headers: dict[str, str], op: str = op) -> bytes:
                    return await self.answer(op, data, headers)

                await stack.enter_async_context(
                    bus.serve(
                        self.subject(op),
                        handler,
                        queue=self.queue,
                        too_large=functools.partial(_too_large, op),
                        large_replies=op not in self.bounded,
                    )
                )
            yield


def _too_large(op: str, size: int, limit: int) -> bytes:
    message = (
        f"the answer to {op} is {size} bytes, over the limit of {limit} bytes one bus message carries "
        "(NATS max_payload), and this operation answers in one message; read the log instead"
    )
    return RpcReply(ok=False, error=ErrorDetail(type="request_too_large", message=message)).model_dump_json().encode()


def field_message(exc: ValidationError) -> str:
    """``<where>: <what>`` for the first error of a validation failure."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"
