"""Deciding whether a destination may be reached, and reaching exactly the addresses that were vetted.

Order of checks: the port (the deployment's ``ports``), the host rules (the session's policy, by
name), then the addresses: a name is resolved once, and refused when *any* address it resolves to is
not public or is one of this machine's own (``hosts.address_problem``, with the interface addresses
read afresh for each destination), unless the operator's allow-list (``allow_addresses``,
``CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES``) holds it; an IP literal must be allowed by the rules as that
exact literal and pass the same address rules. The connection is then made to the vetted addresses, tried in the
resolver's order, and never to a name, so a second lookup cannot answer differently (DNS
rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from corral.credential_proxy.hosts import (
    HostRules,
    IPAddress,
    IPNetwork,
    address_problem,
    describe,
    operator_allows,
)
from corral.credential_proxy.http_head import Destination

Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]
"""A host name and port in, the addresses it resolves to out (``OSError`` when it does not)."""

Open = Callable[[IPAddress, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
"""Open a TCP connection to one address."""

OwnAddresses = Callable[[], Collection[IPAddress]]
"""This machine's interface addresses, now."""

#: How a refusal by the address rules tells the operator what to do.
ALLOW_HINT = (
    "the egress proxy only reaches public addresses that are not this machine's; an operator can allow this "
    "address by adding it to the credential-proxy's CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES"
)


class Refused(Exception):
    """The policy or the address rules forbid the destination (403); the message says why and what to do."""


class Unreachable(Exception):
    """The destination is allowed but could not be resolved or connected to (502)."""


@dataclass(frozen=True)
class Vetted:
    destination: Destination
    addresses: tuple[IPAddress, ...]


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """The system resolver's addresses for ``host``, in its order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]))
        if address not in found:
            found.append(address)
    return found


async def open_tcp(address: IPAddress, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(str(address), port)


async def vet(
    destination: Destination,
    rules: HostRules,
    *,
    ports: tuple[int, ...],
    resolve: Resolve,
    timeout_s: float,
    own_addresses: OwnAddresses,
    allow_addresses: tuple[IPNetwork, ...] = (),
) -> Vetted:
    """Check ``destination`` against the session's rules and resolve it (once).

    Raises:
        Refused: the port, the host or one of its addresses is not allowed.
        Unreachable: the name does not resolve (or not in time).
    """
    host = describe(destination.host)
    if destination.port not in ports:
        allowed = ", ".join(str(p) for p in ports)
        raise Refused(f"egress to {host} port {destination.port} refused: sandboxes may reach ports {allowed} only")
    if not rules.allows(destination.host):
        if isinstance(destination.host, str):
            raise Refused(
                f"egress to {host} refused: it is not in this session's allowed hosts; "
                "add it to the environment's networking.allowed_hosts"
            )
        raise Refused(
            f"egress to the IP address {host} refused: name the host instead, or add {destination.host} "
            "itself to the environment's networking.allowed_hosts"
        )
    if isinstance(destination.host, str):
        try:
            async with asyncio.timeout(timeout_s):
                addresses = tuple(await resolve(destination.host, destination.port))
        except TimeoutError:
            raise Unreachable(f"{host} did not resolve within {timeout_s:g} s") from None
        except OSError as exc:
            raise Unreachable(f"{host} does not resolve ({exc.strerror or exc})") from None
        if not addresses:
            raise Unreachable(f"{host} resolves to no address")
    else:
        addresses = (destination.host,)
    own = own_addresses()
    for address in addresses:
        if operator_allows(address, allow_addresses):
            continue
        problem = address_problem(address, own)
        if problem is not None:
            via = "" if address == destination.host else f" resolves to {address}, which"
            raise Refused(f"egress to {host} refused: it{via} is {problem}; {ALLOW_HINT}")
    return Vetted(destination=destination, addresses=addresses)


async def connect(
    vetted: Vetted, *, open_connection: Open, timeout_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, IPAddress]:
    """Connect to the first vetted address that answers (each attempt bounded by ``timeout_s``).

    Raises:
        Unreachable: no address accepted the connection.
    """
    failures: list[str] = []
    for address in vetted.addresses:
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await open_connection(address, vetted.destination.port)
        except TimeoutError:
            failures.append(f"{address}: no answer within {timeout_s:g} s")
        except OSError as exc:
            failures.append(f"{address}: {exc.strerror or exc}")
        else:
            return reader, writer, address
    where = describe(vetted.destination.host)
    raise Unreachable(f"cannot connect to {where} port {vetted.destination.port} ({'; '.join(failures)})")
