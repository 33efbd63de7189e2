"""The network this machine's tests reach the outside through, configured as an operator of it would.

Some networks intercept egress: their DNS answers every outside host with the address of their
intercepting proxy, which may lie in a documentation range (this machine's does: 203.0.113.80). The
credential-proxy refuses those ranges unless the operator lists the addresses in
``CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES``; the test stacks list ``stand_in_addresses()``, what the outside
hosts they reach resolve to here when the address rules would refuse it. On a network that resolves
them to public addresses the list is empty. This machine's own addresses are never listed.
"""

from __future__ import annotations

import ipaddress
import socket

from corral.credential_proxy.hosts import PACKAGE_MANAGER_HOSTS, address_problem
from corral.credential_proxy.interfaces import read_interface_addresses

#: The outside hosts tests reach through the egress proxy.
OUTSIDE_HOSTS = ("deb.debian.org", *PACKAGE_MANAGER_HOSTS)


def stand_in_addresses() -> list[str]:
    """The addresses the outside hosts resolve to here that the address rules refuse (sorted)."""
    own = read_interface_addresses()
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for host in OUTSIDE_HOSTS:
        try:
            infos = socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
        except OSError:
            continue  # not resolvable here: the tests that need it say so
        for *_, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]))
            if address_problem(address) is not None:
                found.add(address)
    mine = sorted(str(a) for a in found & own)
    if mine:
        raise RuntimeError(f"the outside hosts resolve to this machine's own addresses {mine}; not allowing them")
    return sorted(str(a) for a in found)
