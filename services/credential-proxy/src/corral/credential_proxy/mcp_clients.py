"""The MCP client: one pooled connection per (session, server URL), made with the ``mcp`` SDK.

**Transports.** Streamable HTTP first; when the server answers the ``initialize`` POST with HTTP 400,
404 or 405 (what a server that speaks only the older HTTP+SSE transport answers there), the same URL
is tried again with the SSE transport. A connection refused, a refused destination or an
authentication refusal is not retried over SSE.

**Destinations.** Every connection's HTTP client uses a ``VettedBackend``: the URL's host is vetted
before the SDK runs (a refusal is ``DestinationRefused``) and only vetted addresses are connected to
(``mcp_destinations``). Proxies from the environment (``HTTP_PROXY``) are never used.

**Credentials.** Every request of a connection is authenticated by ``mcp_auth.VaultAuth`` from the
session's vault credentials (a 401 refreshes an ``mcp_oauth`` token and resends once); a 401 or 403
that stands is ``McpAuthenticationFailed``, saying why the credential could not be used when known.

**Lifetimes.** Each connection lives in a task of ``McpClients.running()``'s task group (the SDK's
transports must be entered and left by one task): it opens the connection, serves calls until it is
closed, then leaves the SDK's contexts in order. A connection is closed when its session is closed
(``close``: asked by the harness, and by ``session_endings`` when the session is archived or
deleted), when it has been idle ``idle_timeout_s``, after a call on it failed at the transport
(the next call connects again), and at the stop. Opening, listing and calling are each bounded by
their timeouts; a hanging server costs one timeout, never a stuck proxy.

**Imports.** The ``mcp`` SDK (~40 MiB of modules) is imported by the first MCP call, not at start: a
proxy whose sessions use no MCP server never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx2
from opentelemetry import trace

from corral import telemetry
from corral.contracts.mcp import McpTool, McpToolOutcome
from corral.credential_proxy.mcp_auth import NO_CREDENTIALS, Caller, Credentials, VaultAuth
from corral.credential_proxy.mcp_destinations import Rules, ServerUrl, VettedBackend, parse_url
from corral.credential_proxy.mcp_failures import (
    McpAuthenticationFailed,
    McpConnectionFailed,
    auth_message,
    explain,
    reason,
)

if TYPE_CHECKING:
    import mcp_types
    from mcp.client.session import ClientSession

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)

_T = TypeVar("_T")

#: ``initialize`` answered with one of these over streamable HTTP: try the SSE transport.
_SSE_FALLBACK_STATUSES = frozenset({400, 404, 405})


@dataclass(frozen=True)
class Timeouts:
    connect_s: float
    """Connecting and the MCP ``initialize`` handshake."""
    list_s: float
    call_s: float
    idle_s: float


@dataclass(eq=False)
class _Connection:
    key: tuple[str, str]
    session: ClientSession | None = None
    transport: str = ""
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    failure: BaseException | None = None
    refused_status: int | None = None
    """The last HTTP status >= 400 the server answered (401/403: authentication)."""
    auth: VaultAuth | None = None
    """How its requests authenticate; ``auth.problem`` says why the credential could not be used."""
    task: asyncio.Task[None] | None = None


class McpClients:
    def __init__(self, rules: Rules, timeouts: Timeouts, credentials: Credentials = NO_CREDENTIALS) -> None:
        self._rules = rules
        self._timeouts = timeouts
        self._credentials = credentials
        self._connections: dict[tuple[str, str], _Connection] = {}
        self._tg: asyncio.TaskGroup | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[McpClients]:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            reaper = tg.create_task(self._reap())
            try:
                yield self
            finally:
                self._tg = None
                reaper.cancel()
                for connection in list(self._connections.values()):
                    connection.closing.set()
                self._connections.clear()

    def count(self) -> int:
        return len(self._connections)

    async def list_tools(self, caller: Caller, url: str) -> list[McpTool]:
        import mcp_types

        async def work(session: ClientSession) -> list[McpTool]:
            tools: list[McpTool] = []
            cursor: str | None = None
            while True:
                params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
                page = await session.list_tools(params=params)
                tools += [
                    McpTool(name=t.name, description=t.description, input_schema=dict(t.input_schema))
                    for t in page.tools
                ]
                cursor = page.next_cursor
                if not cursor:
                    return tools

        return await self._use(caller, url, work, self._timeouts.list_s, "listing its tools")

    async def call_tool(self, caller: Caller, url: str, name: str, arguments: dict[str, Any]) -> McpToolOutcome:
        import mcp_types

        async def work(session: ClientSession) -> McpToolOutcome:
            result = await session.call_tool(name, arguments)
            if not isinstance(result, mcp_types.CallToolResult):
                return McpToolOutcome(
                    content=[{"type": "text", "text": "the MCP server asked for input Corral cannot give"}],
                    is_error=True,
                )
            return McpToolOutcome(content=result_content(result), is_error=bool(result.is_error))

        attributes = {"mcp.method.name": "tools/call", "gen_ai.tool.name": name, **_server_attributes(url)}
        with _tracer.start_as_current_span(f"tools/call {name}", kind=trace.SpanKind.CLIENT, attributes=attributes):
            return await self._use(caller, url, work, self._timeouts.call_s, f"calling {name!r}")

    async def close(self, session_id: str) -> int:
        """Close every connection of the session; how many there were."""
        keys = [key for key in self._connections if key[0] == session_id]
        for key in keys:
            self._drop(self._connections[key])
        return len(keys)

    # --- connections -----------------------------------------------------------------------------
    async def _use(
        self,
        caller: Caller,
        url: str,
        work: Callable[[ClientSession], Awaitable[_T]],
        timeout_s: float,
        doing: str,
    ) -> _T:
        from mcp.shared.exceptions import MCPError

        server = parse_url(url)
        connection = await self._connection(caller, server)
        connection.busy += 1
        try:
            assert connection.session is not None
            async with asyncio.timeout(timeout_s):
                return await work(connection.session)
        except TimeoutError:
            self._drop(connection)
            raise McpConnectionFailed(
                f"the MCP server at {server.authority} did not answer within {timeout_s:g} s while {doing}"
            ) from None
        except MCPError as exc:
            if connection.refused_status in (401, 403):
                self._drop(connection)
                raise McpAuthenticationFailed(
                    auth_message(server, connection.refused_status, _problem(connection))
                ) from None
            raise McpConnectionFailed(
                f"the MCP server at {server.authority} answered an error while {doing}: {exc.message}"
            ) from None
        except (httpx2.HTTPError, OSError, ExceptionGroup) as exc:
            self._drop(connection)
            raise McpConnectionFailed(
                f"the connection to the MCP server at {server.authority} failed while {doing}: {reason(exc)}"
            ) from None
        finally:
            connection.busy -= 1
            connection.last_used = time.monotonic()

    async def _connection(self, caller: Caller, server: ServerUrl) -> _Connection:
        key = (caller.session_id, server.url)
        connection = self._connections.get(key)
        if connection is None or connection.closing.is_set():
            if self._tg is None:
                raise McpConnectionFailed("the credential-proxy is stopping")
            backend = VettedBackend(self._rules, connect_timeout_s=self._timeouts.connect_s)
            await backend.pin(server.host, server.port)  # DestinationRefused before any connection
            connection = _Connection(key=key)
            auth = VaultAuth(self._credentials, caller, server.url, recovered=lambda: _clear_status(connection))
            connection.auth = auth
            self._connections[key] = connection
            connection.task = self._tg.create_task(self._hold(connection, server, backend, auth))
        try:
            async with asyncio.timeout(self._timeouts.connect_s):
                await connection.ready.wait()
        except TimeoutError:
            self._drop(connection)
            raise McpConnectionFailed(
                f"the MCP server at {server.authority} did not complete the MCP handshake within "
                f"{self._timeouts.connect_s:g} s"
            ) from None
        if connection.failure is not None:
            failure = connection.failure
            self._drop(connection)
            raise explain(failure, server, connection.refused_status, _problem(connection))
        return connection

    def _drop(self, connection: _Connection) -> None:
        connection.closing.set()
        if self._connections.get(connection.key) is connection:
            del self._connections[connection.key]

    async def _hold(self, connection: _Connection, server: ServerUrl, backend: VettedBackend, auth: VaultAuth) -> None:
        """Open the connection (streamable HTTP, else SSE), serve it until it is closed, close it."""
        fields = {"session_id": connection.key[0], "server": server.authority}
        for transport in ("streamable_http", "sse"):
            try:
                async with self._open(connection, server, backend, auth, transport) as session:
                    connection.session, connection.transport = session, transport
                    connection.ready.set()
                    logger.info("MCP connection open", extra={"fields": {**fields, "transport": transport}})
                    await connection.closing.wait()
                logger.info("MCP connection closed", extra={"fields": {**fields, "transport": transport}})
                return
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if connection.ready.is_set():  # it was open: the transport failed under it
                    logger.info("MCP connection ended", extra={"fields": {**fields, "error": reason(exc)}})
                    connection.closing.set()
                    return
                if transport == "streamable_http" and connection.refused_status in _SSE_FALLBACK_STATUSES:
                    connection.refused_status = None
                    continue
                connection.failure = exc
                connection.ready.set()
                return

    @contextlib.asynccontextmanager
    async def _open(
        self,
        connection: _Connection,
        server: ServerUrl,
        backend: VettedBackend,
        auth: VaultAuth,
        transport: str,
    ) -> AsyncIterator[ClientSession]:
        from mcp.client.session import ClientSession
        from mcp.client.sse import sse_client
        from mcp.client.streamable_http import streamable_http_client

        async def note_status(response: httpx2.Response) -> None:
            if response.status_code >= 400:
                connection.refused_status = response.status_code

        http_transport = httpx2.AsyncHTTPTransport(trust_env=False)
        # httpx2 has no public way to set a transport's network backend: its pool is replaced by one
        # whose every connection goes through the VettedBackend.
        await http_transport._pool.aclose()  # noqa: SLF001
        http_transport._pool = _vetted_pool(backend)  # noqa: SLF001
        timeout = httpx2.Timeout(self._timeouts.connect_s, read=max(self._timeouts.call_s, self._timeouts.list_s))
        async with contextlib.AsyncExitStack() as stack:
            if transport == "streamable_http":
                client = await stack.enter_async_context(
                    httpx2.AsyncClient(
                        transport=http_transport,
                        auth=auth,
                        timeout=timeout,
                        trust_env=False,
                        event_hooks={"response": [note_status]},
                    )
                )
                read, write = await stack.enter_async_context(streamable_http_client(server.url, http_client=client))
            else:
                vault_auth = auth

                def factory(
                    headers: dict[str, str] | None = None,
                    timeout: httpx2.Timeout | None = None,
                    auth: httpx2.Auth | None = None,  # noqa: ARG001 (the session's own auth is used)
                ) -> httpx2.AsyncClient:
                    return httpx2.AsyncClient(
                        transport=http_transport,
                        headers=headers,
                        timeout=timeout,
                        auth=vault_auth,
                        trust_env=False,
                        event_hooks={"response": [note_status]},
                    )

                read, write = await stack.enter_async_context(
                    sse_client(
                        server.url,
                        timeout=self._timeouts.connect_s,
                        sse_read_timeout=self._timeouts.idle_s,
                        httpx_client_factory=factory,
                    )
                )
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            yield session

    async def _reap(self) -> None:
        """Close connections nobody used for ``idle_s``."""
        while True:
            await asyncio.sleep(max(self._timeouts.idle_s / 4, 0.05))
            now = time.monotonic()
            for connection in list(self._connections.values()):
                if not connection.busy and now - connection.last_used >= self._timeouts.idle_s:
                    self._drop(connection)


def _server_attributes(url: str) -> dict[str, str | int]:
    """An MCP server's address for a span: host and port, never the URL's path, query or user info."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"server.address": parts.hostname or "", "server.port": port}


def _vetted_pool(backend: VettedBackend) -> Any:
    import httpcore2

    return httpcore2.AsyncConnectionPool(
        ssl_context=httpx2.create_ssl_context(trust_env=False), network_backend=backend, http1=True, http2=False
    )


def _problem(connection: _Connection) -> str | None:
    return connection.auth.problem if connection.auth is not None else None


def _clear_status(connection: _Connection) -> None:
    connection.refused_status = None


def result_content(result: mcp_types.CallToolResult) -> list[dict[str, Any]]:
    """A tool result's content as Messages-API content blocks (text and images; anything else as text)."""
    import mcp_types

    blocks: list[dict[str, Any]] = []
    for item in result.content:
        if isinstance(item, mcp_types.TextContent):
            blocks.append({"type": "text", "text": item.text})
        elif isinstance(item, mcp_types.ImageContent):
            blocks.append(
                {"type": "image", "source": {"type": "base64", "media_type": item.mime_type, "data": item.data}}
            )
        else:
            blocks.append({"type": "text", "text": json.dumps(item.model_dump(mode="json", exclude_none=True))})
    if not blocks and result.structured_content is not None:
        blocks.append({"type": "text", "text": json.dumps(result.structured_content)})
    return blocks
