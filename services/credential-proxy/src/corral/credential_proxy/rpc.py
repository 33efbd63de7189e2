"""Request-reply: the ``EgressOps`` operations (``corral.rpc.egress.<op>``, and those only this machine's
credential-proxy can answer on ``corral.rpc.egress.host.<host_id>.<op>`` too, queue group
``credential-proxy.<host_id>``), the ``McpOps``
operations (``corral.rpc.mcp.<op>``), the ``WebOps`` operations (``corral.rpc.web.<op>``, the web
tools) and the ``CredentialOps`` operations (``corral.rpc.credentials.<op>``), queue group
``credential-proxy``, served by
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

from corral.bus import Bus, NoResponders, Operations, serve_health
from corral.contracts.api.errors import ApiError, ErrorDetail
from corral.contracts.credentials import SECRET_STORE_UNAVAILABLE, CredentialOps
from corral.contracts.egress import (
    EGRESS_SOCKET_NAME,
    CloseEgress,
    CredentialHostFailures,
    EgressClosed,
    EgressOpened,
    EgressOps,
    OpenEgress,
    TakeCredentialHostFailures,
    on_egress_host,
)
from corral.contracts.health import Health
from corral.contracts.mcp import (
    MCP_AUTHENTICATION_FAILED,
    MCP_CONNECTION_FAILED,
    MCP_DESTINATION_REFUSED,
    CallMcpTool,
    CloseMcp,
    ListMcpTools,
    McpClosed,
    McpOps,
    McpServer,
    McpToolList,
    McpToolOutcome,
)
from corral.contracts.operation import Operation
from corral.contracts.web import WebOps
from corral.credential_proxy import metrics
from corral.credential_proxy.credentials import Credentials, StoreCall
from corral.credential_proxy.egress import Egress, NotConfigured, ShuttingDown
from corral.credential_proxy.listener import CannotListen
from corral.credential_proxy.mcp_auth import Caller
from corral.credential_proxy.mcp_clients import McpAuthenticationFailed, McpClients, McpConnectionFailed
from corral.credential_proxy.mcp_destinations import DestinationRefused
from corral.credential_proxy.secret_store import SecretStoreUnavailable
from corral.credential_proxy.vault import Vault
from corral.credential_proxy.webfetch import WebFetcher
from corral.credential_proxy.websearch import WebSearch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Service:
    instance: str
    egress: Egress
    vault: Vault
    probe_timeout_s: float
    fetcher: WebFetcher
    search: WebSearch
    mcp: McpClients
    credentials: Credentials | None = None
    #: This machine's host id (``CORRAL_CREDENTIAL_PROXY_HOST_ID``): its egress is served on its own subjects too.
    host: str | None = None


async def open_egress(service: Service, request: OpenEgress) -> EgressOpened:
    listener = await service.egress.open(request.session_id, request.policy)
    given = await service.egress.sandbox_credentials(request.session_id, request.policy)
    return EgressOpened(
        session_id=request.session_id,
        directory=str(listener.directory),
        socket_name=EGRESS_SOCKET_NAME,
        credential_environment=given.environment,
        ca_certificate=given.ca_certificate,
    )


async def close_egress(service: Service, request: CloseEgress) -> EgressClosed:
    return EgressClosed(closed=await service.egress.close(request.session_id))


async def take_failures(service: Service, request: TakeCredentialHostFailures) -> CredentialHostFailures:
    return CredentialHostFailures(failures=service.egress.take_failures(request.session_id))


async def list_mcp_tools(service: Service, request: ListMcpTools) -> McpToolList:
    tools = await service.mcp.list_tools(_caller(request), request.url)
    return McpToolList(tools=tools)


async def call_mcp_tool(service: Service, request: CallMcpTool) -> McpToolOutcome:
    logger.info(
        "MCP tool call",
        extra={"fields": {"session_id": request.session_id, "tool_use_id": request.tool_use_id, "tool": request.name}},
    )
    try:
        outcome = await service.mcp.call_tool(_caller(request), request.url, request.name, request.arguments)
    except Exception:
        metrics.MCP_CALLS.labels(outcome="failed").inc()
        raise
    metrics.MCP_CALLS.labels(outcome="error" if outcome.is_error else "ok").inc()
    return outcome


def _caller(request: McpServer) -> Caller:
    return Caller(workspace_id=request.workspace_id, session_id=request.session_id, vault_ids=tuple(request.vault_ids))


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
    if isinstance(exc, SecretStoreUnavailable):
        logger.warning("secret store unavailable", extra={"fields": {"error": str(exc)}})
        return ErrorDetail(
            type="overloaded_error",
            message=f"{exc}: the credential was not changed; retry once OpenBao is reachable and unsealed "
            "(the credential-proxy's health says how it is)",
            details={"error_code": SECRET_STORE_UNAVAILABLE},
        )
    if isinstance(exc, ShuttingDown):
        return ErrorDetail(type="overloaded_error", message=str(exc))
    return None


def _describe(request: BaseModel, _result: Any, span: trace.Span) -> None:
    session_id = getattr(request, "session_id", None)
    if isinstance(session_id, str):
        span.set_attribute("corral.session_id", session_id)


def operations(service: Service) -> Operations:
    """Every ``EgressOps``, ``McpOps``, ``WebOps`` and ``CredentialOps`` operation, on its subject in the queue group
    ``credential-proxy`` (the credential operations only when a secret store is configured), and the
    ``EgressOps.HOSTED`` ones on this host's own subjects (``on_egress_host``) when the service has a host id."""
    ops = Operations(service="credential-proxy", translate=_translate, describe=_describe)
    for host in [None] if service.host is None else [None, service.host]:

        def at(op: Any, host: str | None = host) -> Any:
            return op if host is None else on_egress_host(op, host)

        (
            ops.handle(at(EgressOps.OPEN), functools.partial(open_egress, service))
            .handle(at(EgressOps.CLOSE), functools.partial(close_egress, service))
            .handle(at(EgressOps.FAILURES), functools.partial(take_failures, service))
        )
    (
        ops.handle(McpOps.LIST, functools.partial(list_mcp_tools, service))
        .handle(McpOps.CALL, functools.partial(call_mcp_tool, service))
        .handle(McpOps.CLOSE, functools.partial(close_mcp, service))
        .handle(WebOps.FETCH, service.fetcher.fetch)
        .handle(WebOps.SEARCH, service.search.search)
    )
    credentials = service.credentials
    if credentials is not None:
        (
            ops.handle(CredentialOps.CREATE, credentials.create)
            .handle(CredentialOps.UPDATE, credentials.update)
            .handle(CredentialOps.ARCHIVE, credentials.archive)
            .handle(CredentialOps.DELETE, credentials.delete)
            .handle(CredentialOps.VALIDATE, credentials.validate)
            .handle(CredentialOps.DELETE_VAULT, credentials.delete_vault)
        )
    return ops


def store_caller(bus: Bus, *, timeout_s: float) -> StoreCall:
    """``Bus.call`` to the session-store, its absence or silence an error the client can act on."""

    async def call(op: Operation[Any, Any], request: BaseModel) -> Any:
        try:
            return await bus.call(op, request, timeout=timeout_s)
        except NoResponders:
            raise ApiError(
                "overloaded_error", "the session-store is unavailable; the credential was not changed, retry shortly"
            ) from None
        except TimeoutError:
            raise ApiError(
                "overloaded_error",
                f"the session-store did not answer {op.name} within {timeout_s:g}s; retrieve the credential to see "
                "whether the change was applied, then retry",
            ) from None

    return call


async def health(service: Service) -> Health:
    vault = await service.vault.probe(service.probe_timeout_s)
    egress = "ok" if service.egress.configured else "not configured: set CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR"
    return Health(
        service="credential-proxy",
        instance=service.instance,
        status="ok" if vault == "ok" else "degraded",
        details={
            "vault": vault,
            "egress": egress,
            "egress_listeners": str(service.egress.count()),
            "host": service.host or "none: egress served on the queue group only",
            "mcp_connections": str(service.mcp.count()),
            "web_search": "ok"
            if service.search.configured
            else "not configured: set CORRAL_CREDENTIAL_PROXY_SEARCH_URL",
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
