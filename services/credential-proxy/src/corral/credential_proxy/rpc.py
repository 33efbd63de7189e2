"""Request-reply: ``corral.rpc.egress.<op>`` (queue group ``credential-proxy``), each decoded into its
request model and answered with an ``RpcReply``; plus ``corral.health.credential-proxy``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from corral import telemetry
from corral.bus import Bus, serve_health
from corral.contracts.api.errors import ErrorDetail
from corral.contracts.egress import (
    EGRESS_QUEUE,
    EGRESS_SOCKET_NAME,
    CloseEgress,
    EgressClosed,
    EgressOp,
    EgressOpened,
    OpenEgress,
    egress_rpc,
)
from corral.contracts.rpc import Health, RpcReply
from corral.credential_proxy.egress import Egress, NotConfigured, ShuttingDown
from corral.credential_proxy.proxy import CannotListen
from corral.credential_proxy.vault import Vault

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)


@dataclass(frozen=True)
class Service:
    instance: str
    egress: Egress
    vault: Vault
    probe_timeout_s: float


async def open_egress(service: Service, request: OpenEgress) -> EgressOpened:
    listener = await service.egress.open(request.session_id, request.policy)
    return EgressOpened(
        session_id=request.session_id, directory=str(listener.directory), socket_name=EGRESS_SOCKET_NAME
    )


async def close_egress(service: Service, request: CloseEgress) -> EgressClosed:
    return EgressClosed(closed=await service.egress.close(request.session_id))


Route = tuple[type[BaseModel], Callable[[Service, Any], Awaitable[BaseModel]]]

ROUTES: dict[str, Route] = {
    EgressOp.OPEN: (OpenEgress, open_egress),
    EgressOp.CLOSE: (CloseEgress, close_egress),
}


def _field_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


async def handle(service: Service, op: str, data: bytes, headers: dict[str, str]) -> bytes:
    """Decode, run and answer one request, in a span joined to the caller's trace."""
    with _tracer.start_as_current_span(
        f"process {egress_rpc(op)}",
        context=telemetry.extract(headers),
        kind=trace.SpanKind.SERVER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.destination.name": egress_rpc(op),
        },
    ) as span:
        reply = await _answer(service, op, data, span)
        if not reply.ok:
            span.set_attribute("error.type", reply.error.type if reply.error else "error")
        return reply.model_dump_json().encode()


async def _answer(service: Service, op: str, data: bytes, span: trace.Span) -> RpcReply:
    model, handler = ROUTES[op]
    try:
        request = model.model_validate_json(data)
        session_id = getattr(request, "session_id", None)
        if isinstance(session_id, str):
            span.set_attribute("corral.session_id", session_id)
        result = await handler(service, request)
        return RpcReply(ok=True, result=result.model_dump(mode="json"))
    except ValidationError as exc:
        return RpcReply(ok=False, error=ErrorDetail(type="invalid_request_error", message=_field_message(exc)))
    except NotConfigured as exc:
        detail = ErrorDetail(
            type="invalid_request_error", message=str(exc), details={"error_code": "egress_not_configured"}
        )
        return RpcReply(ok=False, error=detail)
    except CannotListen as exc:
        logger.warning("egress socket failed", extra={"fields": {"op": op, "error": str(exc)}})
        detail = ErrorDetail(type="api_error", message=str(exc), details={"error_code": "egress_listen_failed"})
        return RpcReply(ok=False, error=detail)
    except ShuttingDown as exc:
        return RpcReply(ok=False, error=ErrorDetail(type="overloaded_error", message=str(exc)))
    except Exception:
        logger.exception("operation failed", extra={"fields": {"op": op}})
        return RpcReply(
            ok=False, error=ErrorDetail(type="api_error", message=f"egress {op} failed inside the credential-proxy")
        )


async def health(service: Service) -> Health:
    vault = await service.vault.probe(service.probe_timeout_s)
    return Health(
        service="credential-proxy",
        instance=service.instance,
        status="ok" if vault == "ok" else "degraded",
        details={
            "vault": vault,
            "egress": "ok" if service.egress.configured else "not configured: set CORRAL_EGRESS_SOCKET_DIR",
            "egress_listeners": str(service.egress.count()),
        },
    )


@contextlib.asynccontextmanager
async def serve_all(bus: Bus, service: Service) -> AsyncIterator[None]:
    """Serve every operation and the health check while the block runs."""
    async with contextlib.AsyncExitStack() as stack:
        for op in ROUTES:

            async def handler(data: bytes, headers: dict[str, str], op: str = op) -> bytes:
                return await handle(service, op, data, headers)

            await stack.enter_async_context(bus.serve(egress_rpc(op), handler, queue=EGRESS_QUEUE))

        async def report() -> Health:
            return await health(service)

        await stack.enter_async_context(serve_health(bus, "credential-proxy", report))
        yield
