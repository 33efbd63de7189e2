"""Slow clients cannot exhaust the gateway: with its default limits, a client that opens many
connections and sends half a request line on each gets at most ``max_connections_per_client``
(256) of them, the rest are closed at once, the ones it holds are closed after the header timeout
(10 s), a normal client is served throughout, and what the limits did is logged in a few lines."""

from __future__ import annotations

import asyncio
import contextlib
import re

import httpx
import pytest

from corral.devstack.stack import Stack
from tests.e2e.flows import log_text, logged

pytestmark = pytest.mark.e2e

PER_CLIENT = 256  # CORRAL_GATEWAY_MAX_CONNECTIONS_PER_CLIENT's default
HEADER_TIMEOUT_S = 10.0  # CORRAL_GATEWAY_HEADER_TIMEOUT_S's default
SLOW_CLIENT = "127.0.0.2"  # another loopback address: the gateway sees another peer than the test's 127.0.0.1
OPENED = 300


async def half_open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(SLOW_CLIENT, 0))
    with contextlib.suppress(ConnectionError):  # refused at once: the gateway may have reset it already
        writer.write(b"GET /v1/age")  # half a request line, never finished
        await writer.drain()
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        await reader.read()  # returns at EOF: the gateway closed the connection


async def test_half_open_connections_are_limited_per_client_and_timed_out(stack: Stack) -> None:
    log = stack.log_path("gateway")
    lines_before = len(log_text(log).splitlines())
    connections = [await half_open(stack.ports.gateway) for _ in range(OPENED)]
    closings = [asyncio.ensure_future(closed_by_server(reader)) for reader, _ in connections]
    try:
        # the connections over the limit are closed as soon as they are accepted
        async with asyncio.timeout(HEADER_TIMEOUT_S / 2):
            while sum(c.done() for c in closings) < OPENED - PER_CLIENT:
                await asyncio.wait([c for c in closings if not c.done()], return_when=asyncio.FIRST_COMPLETED)
        assert sum(c.done() for c in closings) == OPENED - PER_CLIENT

        # a normal client is served meanwhile
        headers = {"x-api-key": stack.api_key}
        async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=10) as http:
            assert (await http.get("/v1/agents", params={"limit": 1})).status_code == 200

        # the ones held are closed once the header timeout passes
        async with asyncio.timeout(HEADER_TIMEOUT_S + 20):
            await asyncio.gather(*closings)
    finally:
        for c in closings:
            c.cancel()
        for _, writer in connections:
            writer.close()
        # let every transport really close, so no socket is left for the garbage collector
        await asyncio.gather(*(writer.wait_closed() for _, writer in connections), return_exceptions=True)

    text = await logged(log, "sent no complete request headers in time")
    new = text.splitlines()[lines_before:]
    refused = [line for line in new if "over the per-client limit" in line]
    timed_out = [line for line in new if "sent no complete request headers in time" in line]
    assert refused and all(SLOW_CLIENT in line for line in refused), refused
    # rate-limited: a few lines with counts, not one line per connection
    assert len(refused) <= 3 and len(timed_out) <= 3, new
    counted = sum(int(m.group(1)) for line in refused if (m := re.search(r"refused (\d+) connection", line)))
    assert counted == OPENED - PER_CLIENT, refused
