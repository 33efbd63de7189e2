"""Benchmark of MCP tool call overhead through the credential-proxy, next to a direct call.

Starts an MCP server in this process (the ``mcp`` SDK's server, streamable HTTP on 127.0.0.1, in its
own thread) and a private stack (real NATS and services, no Docker) whose credential-proxy admits
it (``CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS``). Then, in one run, it calls the server's ``add``
tool:

  * direct: from this process with the ``mcp`` SDK's client over one open connection;
  * through the proxy: ``corral.rpc.mcp.call`` over the bus, as the harness asks it (one session,
    so the proxy's pooled connection is reused after the first call, which is not counted).

and prints p50 / p99 of each and the p50 the proxy adds. Target (reported, not asserted): <= 3 ms.

    uv run python bench/mcp_calls.py [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx2
import uvicorn
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer

from corral.bus import Bus
from corral.contracts.mcp import CallMcpTool, McpOps
from corral.devstack.ports import Ports
from corral.devstack.stack import Stack

TARGET_ADDED_P50_MS = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve_mcp(port: int) -> uvicorn.Server:
    server = MCPServer("bench-tools", log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return str(a + b)

    app = server.streamable_http_app()
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, name="bench-mcp-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        if time.monotonic() > deadline:
            raise SystemExit("the benchmark's MCP server did not start")
        time.sleep(0.02)
    return running


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(label: str, samples: list[float]) -> None:
    print(
        f"  {label:<28} p50 {percentile(samples, 0.5):7.2f} ms   p99 {percentile(samples, 0.99):7.2f} ms"
        f"   mean {statistics.fmean(samples):7.2f} ms   (n={len(samples)})"
    )


async def direct(url: str, calls: int) -> list[float]:
    samples: list[float] = []
    async with (
        httpx2.AsyncClient(trust_env=False) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await session.call_tool("add", {"a": 1, "b": 2})  # warm-up
        for i in range(calls):
            began = time.perf_counter()
            await session.call_tool("add", {"a": i, "b": 1})
            samples.append((time.perf_counter() - began) * 1000)
    return samples


async def proxied(bus: Bus, url: str, calls: int) -> list[float]:
    session_id = f"sesn_bench{uuid.uuid4().hex[:20]}"

    def request(i: int) -> CallMcpTool:
        return CallMcpTool(
            session_id=session_id, workspace_id="default", server_name="bench", url=url,
            tool_use_id=f"bench-{i}", name="add", arguments={"a": i, "b": 1},
        )  # fmt: skip

    await bus.call(McpOps.CALL, request(-1), timeout=30)  # connects; not counted
    samples: list[float] = []
    for i in range(calls):
        began = time.perf_counter()
        outcome = await bus.call(McpOps.CALL, request(i), timeout=30)
        samples.append((time.perf_counter() - began) * 1000)
        if outcome.is_error:
            raise SystemExit(f"the proxied call failed: {outcome.content}")
    return samples


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="tool calls per path")
    args = parser.parse_args()
    port = free_port()
    server = serve_mcp(port)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        with tempfile.TemporaryDirectory(prefix="corral-bench-mcp-") as tmp:
            stack = Stack(
                Path(tmp),
                Ports.free(),
                service_env={"credential-proxy": {"CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS": f"127.0.0.1:{port}"}},
                log_level="WARNING",
            )
            stack.start(timeout=300)
            try:
                async with Bus.connect(stack.nats_settings(), name="bench-mcp") as bus:
                    # interleave the two paths so both see the same machine load
                    through: list[float] = []
                    plain: list[float] = []
                    rounds = 5
                    for _ in range(rounds):
                        plain += await direct(url, args.calls // rounds)
                        through += await proxied(bus, url, args.calls // rounds)
            finally:
                stack.stop()
    finally:
        server.should_exit = True
    print("MCP tool call (add), this machine:")
    report("direct (mcp SDK client)", plain)
    report("through the credential-proxy", through)
    added = percentile(through, 0.5) - percentile(plain, 0.5)
    verdict = "within" if added <= TARGET_ADDED_P50_MS else "over"
    print(f"  added by the proxy: p50 {added:.2f} ms ({verdict} the {TARGET_ADDED_P50_MS:g} ms target)")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
