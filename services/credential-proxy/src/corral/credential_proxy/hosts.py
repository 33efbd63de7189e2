"""The egress rules, without I/O: which host names a session may reach, and which addresses never.

Host rules (``HostRules.from_policy``), built from an ``EgressPolicy``:

- ``allowed_hosts is None`` (unrestricted networking): every host name and every IP literal;
- otherwise an entry ``example.com`` allows exactly that name, ``*.example.com`` or ``.example.com``
  any subdomain of it (not the name itself), and an IP literal exactly that address. Names compare
  case-insensitively, with a trailing dot ignored; IPv4-mapped IPv6 literals compare as IPv4.
- ``allow_package_managers`` adds ``PACKAGE_MANAGER_HOSTS`` (exact names).

Ports are not part of the rules; the proxy's ``ports`` setting decides them for every session.

Address rules (``address_problem``), applied to every address a destination resolves to, whatever
the host rules say: the floor under every session's policy. They are an explicit table
(``REFUSED_NETWORKS``), not the ``ipaddress`` module's ``is_private``/``is_global`` (whose meaning has
changed between Python releases). Refused: every address of this machine's own interfaces (``own``:
whatever range it is in, a public one included), unspecified and "this network", loopback,
link-local (the cloud metadata address 169.254.169.254 lives there), private (RFC 1918,
unique-local ``fc00::/7``, deprecated site-local ``fec0::/10``), carrier-grade NAT ``100.64.0.0/10``
(cloud metadata at 100.100.100.200), protocol-assignment, benchmarking and documentation ranges
(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, ``2001:db8::/32``, ``3fff::/20``), the old 6to4
relay anycast ``192.88.99.0/24``, multicast, the reserved ``240.0.0.0/4`` and broadcast, and every
IPv6 address outside global unicast ``2000::/3`` (IPv4-compatible and IPv4-translated forms
included). IPv4-mapped (``::ffff:a.b.c.d``), NAT64 (``64:ff9b::/96``) and 6to4 (``2002::/16``)
addresses are judged by the IPv4 address they carry; Teredo (``2001::/32``) is refused whole.

Documentation ranges are refused too although no network's own services live there: a network may
number its own hosts from them (as this rule's own test machine does), and networks that intercept
egress answer DNS with them. Such a deployment lists the addresses it means sandboxes to reach in
the operator's allow-list (``allowed``: ``CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES``), which overrides every
rule here, the machine's own addresses included.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final

from corral.contracts.egress import EgressPolicy, allowed_host_problem, is_host_name

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Added to a session's allowed hosts by ``allow_package_managers``: the registries' own hosts.
PACKAGE_MANAGER_HOSTS: Final = (
    "deb.debian.org",
    "security.debian.org",
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "rubygems.org",
    "proxy.golang.org",
    "sum.golang.org",
)

_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_GLOBAL_UNICAST_V6: Final = ipaddress.IPv6Network("2000::/3")

_V4, _V6 = ipaddress.IPv4Network, ipaddress.IPv6Network
#: Never reached, with the reason given; checked in order (the first match names the reason).
REFUSED_NETWORKS: Final[tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]] = (
    (_V4("0.0.0.0/32"), "the unspecified address"),
    (_V4("0.0.0.0/8"), "in the 'this network' range"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("169.254.0.0/16"), "a link-local address (where cloud metadata services answer)"),
    (_V4("10.0.0.0/8"), "a private address"),
    (_V4("172.16.0.0/12"), "a private address"),
    (_V4("192.168.0.0/16"), "a private address"),
    (_V4("100.64.0.0/10"), "a carrier-grade NAT address"),
    (_V4("192.0.0.0/24"), "reserved for protocol assignments"),
    (_V4("198.18.0.0/15"), "in the benchmarking range (lab networks)"),
    (_V4("192.0.2.0/24"), "in a documentation range (TEST-NET-1)"),
    (_V4("198.51.100.0/24"), "in a documentation range (TEST-NET-2)"),
    (_V4("203.0.113.0/24"), "in a documentation range (TEST-NET-3)"),
    (_V4("192.88.99.0/24"), "a reserved address (the former 6to4 relay anycast)"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),
    (_V6("::/128"), "the unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fc00::/7"), "a private (unique-local) address"),
    (_V6("fec0::/10"), "a private (site-local) address"),
    (_V6("64:ff9b:1::/48"), "a private (local-use NAT64) address"),
    (_V6("ff00::/8"), "a multicast address"),
    (_V6("100::/64"), "a reserved (discard-only) address"),
    (_V6("2001::/23"), "reserved for protocol assignments (Teredo and others)"),
    (_V6("2001:db8::/32"), "in a documentation range"),
    (_V6("3fff::/20"), "in a documentation range"),
)

#: Why an address of this machine is refused.
OWN_ADDRESS: Final = "an address of this machine (where the credential-proxy runs)"


class BadHost(ValueError):
    """The text is neither a host name nor an IP address."""


def parse_host(text: str) -> str | IPAddress:
    """A destination host as the proxy compares it: a lower-case name without a trailing dot, or an
    IP address (IPv4-mapped IPv6 as IPv4). IPv6 literals may come in brackets.

    Raises:
        BadHost: ``text`` is not a host name or IP address (or is a name the resolver would read as
            a number).
    """
    literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return _unmapped(ipaddress.ip_address(literal))
    except ValueError:
        pass
    name = text.lower().removesuffix(".")
    if not is_host_name(name):
        raise BadHost(f"{text!r} is not a host name or an IP address in its usual form")
    return name


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def describe(host: str | IPAddress) -> str:
    """How a host is written in messages and URLs' authority (IPv6 in brackets)."""
    if isinstance(host, ipaddress.IPv6Address):
        return f"[{host}]"
    return str(host)


@dataclass(frozen=True)
class HostRules:
    """Which destination hosts one session's policy allows (before the address rules)."""

    any_host: bool
    names: frozenset[str] = frozenset()
    #: ``.example.com`` for an entry ``*.example.com`` or ``.example.com``.
    suffixes: tuple[str, ...] = ()
    literals: frozenset[IPAddress] = frozenset()

    @classmethod
    def from_policy(cls, policy: EgressPolicy) -> HostRules:
        if policy.allowed_hosts is None:
            return cls(any_host=True)
        names: set[str] = set(PACKAGE_MANAGER_HOSTS) if policy.allow_package_managers else set()
        suffixes: set[str] = set()
        literals: set[IPAddress] = set()
        for entry in policy.allowed_hosts:
            problem = allowed_host_problem(entry)
            if problem is not None:  # the contract validates entries; this guards a hand-built policy
                raise ValueError(problem)
            if entry.startswith(("*.", ".")):
                suffixes.add("." + entry.lower().removeprefix("*").removeprefix(".").removesuffix("."))
                continue
            host = parse_host(entry)
            if isinstance(host, str):
                names.add(host)
            else:
                literals.add(host)
        return cls(
            any_host=False, names=frozenset(names), suffixes=tuple(sorted(suffixes)), literals=frozenset(literals)
        )

    def allows(self, host: str | IPAddress) -> bool:
        """Whether ``host`` (from ``parse_host``) is allowed by name; its addresses are checked apart."""
        if self.any_host:
            return True
        if isinstance(host, str):
            return host in self.names or any(host.endswith(suffix) for suffix in self.suffixes)
        return host in self.literals


def address_problem(address: IPAddress, own: Collection[IPAddress] = frozenset()) -> str | None:
    """Why the proxy never connects to ``address`` (a short phrase), or ``None`` when it may.

    ``own`` holds this machine's interface addresses (IPv4 as IPv4); they are refused in every form,
    IPv4-mapped, NAT64 and 6to4 included, whatever range they are in (the phrase names both).
    """
    problem = _range_problem(address, own)
    if address not in own:
        return problem
    return OWN_ADDRESS if problem is None else f"{problem}, and {OWN_ADDRESS}"


def _range_problem(address: IPAddress, own: Collection[IPAddress]) -> str | None:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _embedded(address, address.ipv4_mapped, "IPv4-mapped", own)
        if address in _NAT64:
            return _embedded(address, ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64", own)
        if address.sixtofour is not None:
            return _embedded(address, address.sixtofour, "6to4", own)
    for network, reason in REFUSED_NETWORKS:
        if address.version == network.version and address in network:
            return reason
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return "a reserved address (outside global unicast 2000::/3)"
    return None


def _embedded(
    outer: ipaddress.IPv6Address, inner: ipaddress.IPv4Address, kind: str, own: Collection[IPAddress]
) -> str | None:
    problem = address_problem(inner, own)
    return None if problem is None else f"{problem} ({outer} is the {kind} form of {inner})"


def operator_allows(address: IPAddress, allowed: Iterable[IPNetwork]) -> bool:
    """Whether the operator's allow-list (``CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES``) holds ``address`` itself
    (an IPv4-mapped address as its IPv4 address; other embedded forms are not matched)."""
    plain = _unmapped(address)
    return any(plain.version == network.version and plain in network for network in allowed)
