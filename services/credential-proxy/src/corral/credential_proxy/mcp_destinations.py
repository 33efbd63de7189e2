"""Where the MCP client may connect: tenants choose MCP server URLs, so they get the egress floor.

A server URL must be ``http`` or ``https`` with a host and no user part. Its host is resolved once
per connection and **every** address it resolves to must pass the same address rules as sandbox
egress (``hosts.address_problem``: no loopback, private, link-local, CGNAT, documentation, reserved
or multicast address, none of this machine's own addresses, in any embedded form). The connection
is then made to those vetted addresses themselves (``VettedBackend``, the HTTP client's network
backend), never to the name again, so a second DNS answer cannot differ (no rebinding), and any
other host the HTTP client tries is refused the same way.

An operator admits a destination the rules refuse with ``CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS``
(comma-separated ``host:port``, the host as the URL writes it: a name or an IP address, IPv6 in
brackets), e.g. an MCP server of the operator's own on a private network, or one on this machine in
tests. Only that exact host and port is admitted. Unlike sandbox egress, any port may be named
in a URL: the address rules are the floor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from httpcore2 import AsyncNetworkBackend, AsyncNetworkStream, ConnectError
from httpcore2._backends.auto import AutoBackend

from corral.credential_proxy.destinations import OwnAddresses, Resolve, system_resolve
from corral.credential_proxy.hosts import BadHost, IPAddress, address_problem, describe, parse_host

#: What an operator changes to admit a refused destination.
ALLOW_SETTING = "CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS"


class DestinationRefused(Exception):
    """The URL is malformed or its host is refused by the address rules; the message says why."""


class BadDestinationEntry(ValueError):
    """An ``ALLOW_DESTINATIONS`` entry is not ``host:port``."""


Admitted = frozenset[tuple[str | IPAddress, int]]


def parse_destination(entry: str) -> tuple[str | IPAddress, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as ``(parse_host(host), port)``.

    Raises:
        BadDestinationEntry: the entry is not ``host:port`` with a valid host and port.
    """
    text = entry.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise BadDestinationEntry(
            f"{entry!r} is not host:port; write e.g. mcp.internal:8080, 10.0.0.5:443 or [fd00::5]:443"
        )
    if ":" in host and not host.startswith("["):
        raise BadDestinationEntry(f"{entry!r}: write an IPv6 address in brackets, [{host}]:{port_text}")
    try:
        return parse_host(host), int(port_text)
    except BadHost as exc:
        raise BadDestinationEntry(f"{entry!r}: {exc}") from None


def parse_destinations(entries: Iterable[str]) -> Admitted:
    return frozenset(parse_destination(entry) for entry in entries if entry.strip())


@dataclass(frozen=True)
class ServerUrl:
    """A server URL's destination: its host (``parse_host``) and port."""

    url: str
    host: str | IPAddress
    port: int

    @property
    def authority(self) -> str:
        return f"{describe(self.host)}:{self.port}"


def parse_url(url: str) -> ServerUrl:
    """Raises: DestinationRefused: not an ``http``/``https`` URL with a host (and no user part)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DestinationRefused(f"the MCP server URL {url!r} is malformed ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused(f"the MCP server URL {url!r} must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused(
            f"the MCP server URL {url!r} carries a user name or password; remove it (credentials come from vaults)"
        )
    try:
        host = parse_host(parts.hostname)
    except BadHost as exc:
        raise DestinationRefused(f"the MCP server URL {url!r} has a bad host: {exc}") from None
    return ServerUrl(url=url, host=host, port=port or (443 if parts.scheme == "https" else 80))


@dataclass
class Rules:
    """The address rules, the operator's admitted destinations and how names are resolved."""

    own_addresses: OwnAddresses
    admitted: Admitted = frozenset()
    resolve: Resolve = system_resolve
    timeout_s: float = 10.0

    async def vet(self, host: str | IPAddress, port: int, *, what: str = "MCP server") -> tuple[IPAddress, ...]:
        """The addresses to connect to for ``host:port``, each allowed.

        Raises:
            DestinationRefused: an address is refused, or the name does not resolve.
        """
        where = f"{describe(host)}:{port}"
        if isinstance(host, str):
            try:
                async with asyncio.timeout(self.timeout_s):
                    addresses = tuple(await self.resolve(host, port))
            except TimeoutError:
                raise DestinationRefused(f"{host} did not resolve within {self.timeout_s:g} s") from None
            except OSError as exc:
                raise DestinationRefused(f"{host} does not resolve ({exc.strerror or exc})") from None
            if not addresses:
                raise DestinationRefused(f"{host} resolves to no address")
        else:
            addresses = (host,)
        if (host, port) in self.admitted:
            return addresses
        own = self.own_addresses()
        for address in addresses:
            problem = address_problem(address, own)
            if problem is not None:
                via = "" if address == host else f" resolves to {address}, which"
                raise DestinationRefused(
                    f"{what} {where} refused: it{via} is {problem}; the credential-proxy reaches only public "
                    f"addresses that are not its machine's. An operator can admit it by adding {where} "
                    f"to {ALLOW_SETTING}"
                )
        return addresses


@dataclass
class VettedBackend(AsyncNetworkBackend):
    """The HTTP client's network backend for one MCP connection: connects only to vetted addresses.

    ``pin`` vets a destination up front (so a refusal is a clear error before the MCP SDK runs);
    ``connect_tcp`` connects to a pinned destination's addresses, and vets any other destination first.
    """

    rules: Rules
    connect_timeout_s: float
    pinned: dict[tuple[str | IPAddress, int], tuple[IPAddress, ...]] = field(default_factory=dict)
    _inner: AsyncNetworkBackend = field(default_factory=AutoBackend)

    async def pin(self, host: str | IPAddress, port: int) -> None:
        self.pinned[(host, port)] = await self.rules.vet(host, port)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncNetworkStream:
        try:
            key = (parse_host(host), port)
        except BadHost as exc:
            raise DestinationRefused(str(exc)) from None
        if key not in self.pinned:
            await self.pin(*key)
        failures: list[str] = []
        for address in self.pinned[key]:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=min(timeout, self.connect_timeout_s) if timeout is not None else self.connect_timeout_s,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (ConnectError, OSError) as exc:
                failures.append(f"{address}: {exc or type(exc).__name__}")
        raise ConnectError(f"cannot connect to {describe(key[0])} port {port} ({'; '.join(failures)})")

    async def connect_unix_socket(
        self,
        path: str,  # noqa: ARG002
        timeout: float | None = None,  # noqa: ARG002
        socket_options: Iterable[Any] | None = None,  # noqa: ARG002
    ) -> AsyncNetworkStream:
        raise DestinationRefused("MCP servers are reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
