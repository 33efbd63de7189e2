"""Session creates through minimal keep-alive HTTP clients: creates/s, the CPU each stack process
spent per create and the NATS messages each connection moved per create (``core_flow.py``'s B7 figures)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from report import ok
from stack_cpu import cpu_ms, own_cpu_ms, per_op

from corral.devstack.stack import Stack


class KeepAliveClient:
    """A minimal HTTP/1.1 keep-alive client for one pre-encoded request: it costs the benchmark
    process almost nothing per request, so the rate it sees is the server's, not the client's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, url: str) -> KeepAliveClient:
        parts = httpx.URL(url)
        reader, writer = await asyncio.open_connection(parts.host, parts.port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> bytes:
        """Send ``request``; the status line (the body is read and dropped)."""
        status, _ = await self.exchange(request)
        return status

    async def exchange(self, request: bytes) -> tuple[bytes, bytes]:
        """Send ``request``; the status line and the body."""
        self._writer.write(request)
        status = await self._reader.readline()
        length = 0
        while (header := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self._reader.readexactly(length)

    async def aclose(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


def post_request(path: str, body: dict[str, Any], api_key: str) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {api_key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def nats_messages(http: httpx.AsyncClient, monitor_url: str) -> dict[str, int]:
    """Messages each named NATS connection has sent and received so far (NATS's ``/connz``)."""
    connections = ok(await http.get(f"{monitor_url}/connz", params={"limit": 1000}))["connections"]
    counts: dict[str, int] = {}
    for connection in connections:
        name = connection.get("name") or "unnamed"
        counts[name] = counts.get(name, 0) + connection["in_msgs"] + connection["out_msgs"]
    return counts


@dataclass
class Creates:
    httpx_rate: float
    lean_rate: float
    cpu_ms: dict[str, float]
    """CPU milliseconds per create, per stack process, during the lean run."""
    parallel_rate: float
    parallel_cpu_ms: dict[str, float]
    """The same with several lean clients at once."""
    messages: dict[str, float]
    """NATS messages per create, sent plus received, per connection (sequential lean run): unlike CPU
    time, a count the machine's load does not move."""


async def lean_creates(
    stack: Stack, request: bytes, count: int, clients: int
) -> tuple[float, dict[str, float], dict[str, float]]:
    """``count`` creates through ``clients`` keep-alive clients at once: creates/s, CPU ms per create
    by process and NATS messages per create by connection."""
    lean = [await KeepAliveClient.connect(stack.gateway_url) for _ in range(clients)]
    each = max(1, count // clients)

    async def run(client: KeepAliveClient, times: int) -> None:
        for _ in range(times):
            status = await client.send(request)
            if b" 200 " not in status:
                raise SystemExit(f"session create answered {status!r}")

    try:
        await asyncio.gather(*(run(client, 5) for client in lean))  # warm-up, every connection open at once
        async with httpx.AsyncClient(timeout=30) as monitor:
            sent = await nats_messages(monitor, stack.nats_monitor_url)
            before = cpu_ms(stack)
            own = own_cpu_ms()
            t0 = time.perf_counter()
            await asyncio.gather(*(run(client, each) for client in lean))
            rate = each * clients / (time.perf_counter() - t0)
            spent = per_op(before, cpu_ms(stack), each * clients)
            spent["bench-client"] = (own_cpu_ms() - own) / (each * clients)
            # Deliveries to the consumers follow the reply: a client's count may lag by a message or two.
            messages = {
                name: round((n - sent.get(name, 0)) / (each * clients), 2)
                for name, n in (await nats_messages(monitor, stack.nats_monitor_url)).items()
            }
    finally:
        for client in lean:
            await client.aclose()
    return rate, spent, {name: n for name, n in messages.items() if n >= 0.01}


async def session_creates(stack: Stack, count: int, clients: int) -> Creates:
    """Sequential creates through httpx (what a Python client sees) and through ``KeepAliveClient``,
    one and ``clients`` at once."""
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers={"x-api-key": stack.api_key}, timeout=30) as http:
        agent = ok(await http.post("/v1/agents", json={"name": "bench", "model": "claude-sonnet-4-6"}))
        env = ok(await http.post("/v1/environments", json={"name": f"creates-{agent['id'].lower()}"}))
        body = {"agent": agent["id"], "environment_id": env["id"]}
        for _ in range(20):  # warm-up
            await http.post("/v1/sessions", json=body)
        t0 = time.perf_counter()
        for _ in range(count):
            response = await http.post("/v1/sessions", json=body)
            response.raise_for_status()
        httpx_rate = count / (time.perf_counter() - t0)
    request = post_request("/v1/sessions", body, stack.api_key)
    lean_rate, spent, messages = await lean_creates(stack, request, count, 1)
    parallel_rate, parallel_spent, _ = await lean_creates(stack, request, count, clients)
    return Creates(
        httpx_rate=httpx_rate,
        lean_rate=lean_rate,
        cpu_ms=spent,
        parallel_rate=parallel_rate,
        parallel_cpu_ms=parallel_spent,
        messages=messages,
    )
