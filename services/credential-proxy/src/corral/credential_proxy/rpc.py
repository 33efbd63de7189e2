"""Request-reply: the ``EgressOps`` operations (``corral.rpc.egress.<op>``) and the ``McpOps``
operations (``corral.rpc.mcp.<op>``), queue group ``credential-proxy``, served by
``corral.bus.Operations``; plus ``corral.health.credential-proxy``."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from pydantic import BaseModel

from corral.bus import Bus, Operations, serve_health
from corral.contracts.api.errors import ErrorDetail
from corral.contracts.egress import (
    EGRESS_SOCKET_NAME,
    CloseEgress,
    EgressClosed,
    EgressOpened,
    EgressOps,
    OpenEgress,
)
from corral.contracts.mcp import (
    MCP_AUTHENTICATION_FAILED,
    MCP_CONNECTION_FAILED,
    MCP_DESTINATION_REFUSED,
    CallMcpTool,
    CloseMcp,
    ListMcpTools,
    McpClosed,
    McpOps,
    McpToolList,
    McpToolOutcome,
)
from corral.contracts.rpc import Health
from corral.credential_proxy.egress import Egress, NotConfigured, ShuttingDown
from corral.credential_proxy.mcp_clients import McpAuthenticationFailed, McpClients, McpConnectionFailed
from corral.credential_proxy.mcp_destinations import DestinationRefused
from corral.credential_proxy.proxy import CannotListen
from corral.credential_proxy.vault import Vault

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Service:
    instance: str
    egress: Egress
    vault: Vault
    probe_timeout_s: float
    mcp: McpClients


async def open_egress(service: Service, request: OpenEgress) -> EgressOpened:
    listener = await service.egress.open(request.session_id, request.policy)
    return EgressOpened(
        session_id=request.session_id, directory=str(listener.directory), socket_name=EGRESS_SOCKET_NAME
    )


async def close_egress(service: Service, request: CloseEgress) -> EgressClosed:
    return EgressClosed(closed=await service.egress.close(request.session_id))


async def list_mcp_tools(service: Service, request: ListMcpTools) -> McpToolList:
    tools = await service.mcp.list_tools(request.session_id, tuple(request.vault_ids), request.url)
    return McpToolList(tools=tools)


async def call_mcp_tool(service: Service, request: CallMcpTool) -> McpToolOutcome:
    logger.info(
        "MCP tool call",
        extra={"fields": {"session_id": request.session_id, "tool_use_id": request.tool_use_id, "tool": request.name}},
    )
    return await service.mcp.call_tool(
        request.session_id, tuple(request.vault_ids), request.url, request.name, request.arguments
    )


async def close_mcp(service: Service, request: CloseMcp) -> McpClosed:
    return McpClosed(closed=await service.mcp.close(request.session_id))


def _translate(exc: Exception) -> ErrorDetail | None:
    if isinstance(exc, DestinationRefused):
        logger.info("MCP destination refused", extra={"fields": {"reason": str(exc)}})
        return ErrorDetail(
            type="invalid_request_error", message=str(exc), details={"error_code": MCP_DESTINATION_REFUSED}
        )
    if isinstance(exc, McpAuthenticationFailed):
        return ErrorDetail(type="api_error", message=str(exc), details={"error_code": MCP_AUTHENTICATION_FAILED})
    if isinstance(exc, McpConnectionFailed):
        logger.info("MCP connection failed", extra={"fields": {"reason": str(exc)}})
        return ErrorDetail(type="api_error", message=str(exc), details={"error_code": MCP_CONNECTION_FAILED})
    if isinstance(exc, NotConfigured):
        return ErrorDetail(
            type="invalid_request_error", message=str(exc), details={"error_code": "egress_not_configured"}
        )
    if isinstance(exc, CannotListen):
        logger.warning("egress socket failed", extra={"fields": {"error": str(exc)}})
        return ErrorDetail(type="api_error", message=str(exc), details={"error_code": "egress_listen_failed"})
    if isinstance(exc, ShuttingDown):
        return ErrorDetail(type="overloaded_error", message=str(exc))
    return None


def _describe(request: BaseModel, _result: Any, span: trace.Span) -> None:
    session_id = getattr(request, "session_id", None)
    if isinstance(session_id, str):
        span.set_attribute("corral.session_id", session_id)


def operations(service: Service) -> Operations:
    """Every ``EgressOps`` operation, on its subject in the queue group ``credential-proxy``."""
    return (
        Operations(service="credential-proxy", translate=_translate, describe=_describe)
        .handle(EgressOps.OPEN, functools.partial(open_egress, service))
        .handle(EgressOps.CLOSE, functools.partial(close_egress, service))
        .handle(McpOps.LIST, functools.partial(list_mcp_tools, service))
        .handle(McpOps.CALL, functools.partial(call_mcp_tool, service))
        .handle(McpOps.CLOSE, functools.partial(close_mcp, service))
    )


async def health(service: Service) -> Health:
    vault = await service.vault.probe(service.probe_timeout_s)
    egress = "ok" if service.egress.configured else "not configured: set CORRAL_EGRESS_SOCKET_DIR"
    return Health(
        service="credential-proxy",
        instance=service.instance,
        status="ok" if vault == "ok" else "degraded",
        details={
            "vault": vault,
            "egress": egress,
            "egress_listeners": str(service.egress.count()),
            "mcp_connections": str(service.mcp.count()),
        },
        dependencies={"vault": vault if vault == "ok" else f"{vault} (secrets cannot be read; egress goes on)"},
    )


@contextlib.asynccontextmanager
async def serve_all(bus: Bus, service: Service) -> AsyncIterator[None]:
    """Serve every operation and the health check while the block runs."""
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(operations(service).serve(bus))

        async def report() -> Health:
            return await health(service)

        await stack.enter_async_context(serve_health(bus, "credential-proxy", report))
        yield
