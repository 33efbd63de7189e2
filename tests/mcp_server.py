"""A real MCP server for tests and benchmarks, built with the ``mcp`` SDK's server side: streamable
HTTP on a free port of 127.0.0.1, in its own thread (its own event loop), so tests on any loop use it.

Under ``/secure/`` (``secure_url``) the same tools need ``Authorization: Bearer <t>`` with ``t`` in
``valid_tokens`` (else HTTP 401); ``bearers`` records the tokens each request carried. Under
``/legacy/`` (``legacy_url``) the same tools are served over the older HTTP+SSE transport only (a
``GET`` event stream plus ``POST``s to the endpoint it names), as servers that predate streamable
HTTP do: a streamable-HTTP ``POST`` there is answered 405. ``requests`` records every request's
method, path and query, and ``streams_ended`` the queries of the SSE streams that ended (their
client went away).

Tools: ``add(a, b)`` (the sum, as text), ``echo(text)``, and ``hang()``, which does not answer until
the server stops (``hanging`` counts the calls that started). ``calls`` counts every tool call.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunningMcpServer:
    port: int
    calls: dict[str, int] = field(default_factory=dict)
    hanging: int = 0
    valid_tokens: set[str] = field(default_factory=set)
    bearers: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    streams_ended: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def secure_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/secure/mcp"

    @property
    def legacy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/legacy/sse"


def _recording(state: RunningMcpServer, app: Any, legacy: Any) -> Any:
    """``app``, with every request recorded and ``/legacy/...`` given to the SSE-only ``legacy`` app."""

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        state.requests.append((scope["method"], scope["path"], query))
        if not scope["path"].startswith("/legacy/"):
            await app(scope, receive, send)
            return
        try:
            await legacy({**scope, "root_path": "/legacy"}, receive, send)
        finally:
            if scope["method"] == "GET":
                state.streams_ended.append(query)

    return recording


def _guarded(state: RunningMcpServer, app: Any) -> Any:
    """``app``, with ``/secure/...`` answered as ``/...`` only for a valid bearer (else 401)."""

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/secure/"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            token = headers.get("authorization", "").removeprefix("Bearer ")
            state.bearers.append(token)
            if token not in state.valid_tokens:
                await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
            path = scope["path"].removeprefix("/secure")
            scope = {**scope, "path": path, "raw_path": path.encode()}
        await app(scope, receive, send)

    return guarded


def _server(state: RunningMcpServer, stop: asyncio.Event) -> MCPServer:
    server = MCPServer("corral-test-tools")

    def count(name: str) -> None:
        state.calls[name] = state.calls.get(name, 0) + 1

    @server.tool()
    def add(a: int, b: int) -> str:
        """Add two integers."""
        count("add")
        return str(a + b)

    @server.tool()
    def echo(text: str) -> str:
        """Return the text as it was sent."""
        count("echo")
        return text

    @server.tool()
    async def hang() -> str:
        """Never answers (until the server stops)."""
        count("hang")
        state.hanging += 1
        await stop.wait()
        return "stopped"

    return server


@contextmanager
def serving_mcp(port: int | None = None) -> Iterator[RunningMcpServer]:
    """Run the server until the block ends."""
    state = RunningMcpServer(port=port or free_port())
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    holder: dict[str, uvicorn.Server] = {}

    async def main() -> None:
        tools = _server(state, stop)
        app = _recording(state, _guarded(state, tools.streamable_http_app()), tools.sse_app())
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=state.port, log_level="warning"))
        holder["server"] = server
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn has no started event)
            await asyncio.sleep(0.02)
        ready.set()
        await task

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="mcp-test-server", daemon=True)
    thread.start()
    if not ready.wait(30) or not holder["server"].started:
        raise RuntimeError(f"the test MCP server did not start on port {state.port}")
    try:
        yield state
    finally:
        server = holder["server"]
        loop.call_soon_threadsafe(stop.set)
        server.should_exit = True
        server.force_exit = True
        thread.join(10)
