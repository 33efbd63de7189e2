"""An HTTP client's network backend that reaches one destination's vetted addresses and nothing else.

A name is resolved and its addresses checked once (the destination rules); the client then
connects to those addresses, in the resolver's order, never to the name again, so a second
resolution cannot send it elsewhere (DNS rebinding). TLS still verifies the name. Used by
``web_fetch`` and by ``mcp_oauth`` token refreshes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore2

from corral.credential_proxy.hosts import BadHost, IPAddress, parse_host


class PinnedBackend(httpcore2.AsyncNetworkBackend):
    """Connects to ``host:port`` at ``addresses`` only; any other host or port is refused.

    ``connect_timeout_s`` caps each connection attempt (the client's own timeout applies when
    shorter); ``what`` names the caller in the refusal of a unix socket.
    """

    def __init__(
        self,
        host: str | IPAddress,
        port: int,
        addresses: tuple[IPAddress, ...],
        *,
        connect_timeout_s: float | None = None,
        what: str = "this client",
    ) -> None:
        self._host, self._port, self._addresses = host, port, addresses
        self._timeout_s = connect_timeout_s
        self._what = what
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        del local_address, socket_options  # the vetted addresses alone decide where this goes
        try:
            named: str | IPAddress | None = parse_host(host)
        except BadHost:
            named = None
        if named != self._host or port != self._port:
            raise httpcore2.ConnectError(f"{host}:{port} was not vetted")
        attempt_s = timeout if self._timeout_s is None else min(timeout or self._timeout_s, self._timeout_s)
        failures: list[str] = []
        for address in self._addresses:
            try:
                return await self._inner.connect_tcp(str(address), port, timeout=attempt_s)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failures.append(f"{address}: {exc or type(exc).__name__}")
        raise httpcore2.ConnectError("; ".join(failures))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        del path, timeout, socket_options
        raise httpcore2.ConnectError(f"{self._what} reaches TCP destinations only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
