"""The addresses of this machine's own network interfaces, which the egress proxy never connects to.

They are read from the kernel over rtnetlink (an ``RTM_GETADDR`` dump, what ``ip address`` shows):
every address of every interface, IPv4 and IPv6, up or down, secondary addresses and link-local ones
included, with the standard library alone. ``/proc/net/if_inet6`` would give IPv6 only, the
``SIOCGIFCONF`` ioctl only one IPv4 address per interface label, and ``getaddrinfo(gethostname())``
only what the name happens to resolve to.

A dump takes well under a millisecond, so ``OwnAddresses.current()`` reads them again for every
destination checked: an address added since (a new interface, a DHCP lease, a Docker bridge) is
refused from the first connection after it appears. When a read fails the last known addresses
are kept (and the failure logged); the first read, at start-up, must succeed.

These are the addresses of the network namespace the credential-proxy runs in: run it in the host's
(as a plain process or a container with host networking), or the host's own addresses are not
among them.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Final

from corral.credential_proxy.hosts import IPAddress

logger = logging.getLogger(__name__)

_NLMSG_HEADER: Final = struct.Struct("=LHHLL")  # length, type, flags, sequence, port id
_IFADDRMSG: Final = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
_RTATTR: Final = struct.Struct("=HH")  # length, type
_NLMSG_ERROR: Final = 2
_NLMSG_DONE: Final = 3
_RTM_NEWADDR: Final = 20
_RTM_GETADDR: Final = 22
_NLM_F_REQUEST: Final = 0x1
_NLM_F_DUMP: Final = 0x300
_IFA_ADDRESS: Final = 1  # the interface's address (on a point-to-point link: the peer's, refused too)
_IFA_LOCAL: Final = 2  # the local address
_RECEIVE_BYTES: Final = 1 << 16
_SEQUENCE: Final = 1


def _align(length: int) -> int:
    return (length + 3) & ~3


def read_interface_addresses() -> frozenset[IPAddress]:
    """Every address of every interface in this network namespace.

    Raises:
        OSError: the kernel could not be asked (no netlink) or answered with an error.
    """
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        request = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        header = _NLMSG_HEADER.pack(
            _NLMSG_HEADER.size + len(request), _RTM_GETADDR, _NLM_F_REQUEST | _NLM_F_DUMP, _SEQUENCE, 0
        )
        sock.sendall(header + request)
        found: set[IPAddress] = set()
        while True:
            data = sock.recv(_RECEIVE_BYTES)
            if not data:
                raise OSError("the kernel closed the netlink socket before the address dump ended")
            if _parse(data, found):
                return frozenset(found)


def _parse(data: bytes, found: set[IPAddress]) -> bool:
    """Add the addresses in one netlink datagram to ``found``; whether the dump is complete."""
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind, _flags, _sequence, _port = _NLMSG_HEADER.unpack_from(data, offset)
        if length < _NLMSG_HEADER.size or offset + length > len(data):
            raise OSError(f"malformed netlink message (length {length})")
        body = offset + _NLMSG_HEADER.size
        if kind == _NLMSG_DONE:
            return True
        if kind == _NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, body) if length >= _NLMSG_HEADER.size + 4 else (0,)
            if code == 0:
                raise OSError("listing interface addresses failed: the kernel acknowledged instead of answering")
            raise OSError(-code, f"listing interface addresses failed: {os.strerror(-code)}")
        if kind == _RTM_NEWADDR and length >= _NLMSG_HEADER.size + _IFADDRMSG.size:
            family = data[body]
            attribute = body + _IFADDRMSG.size
            while attribute + _RTATTR.size <= offset + length:
                size, attribute_type = _RTATTR.unpack_from(data, attribute)
                if size < _RTATTR.size:
                    break
                raw = data[attribute + _RTATTR.size : attribute + size]
                if attribute_type in (_IFA_ADDRESS, _IFA_LOCAL) and (
                    (family == socket.AF_INET and len(raw) == 4) or (family == socket.AF_INET6 and len(raw) == 16)
                ):
                    found.add(ipaddress.ip_address(raw))
                attribute += _align(size)
        offset += _align(length)
    return False


class OwnAddresses:
    """This machine's interface addresses, read again on every ``current()``.

    Raises (constructing it):
        OSError: the first read failed (the proxy cannot know which addresses to refuse).
    """

    def __init__(self, read: Callable[[], frozenset[IPAddress]] = read_interface_addresses) -> None:
        self._read = read
        self._last = read()
        self._failing = False

    def current(self) -> frozenset[IPAddress]:
        try:
            addresses = self._read()
        except OSError as exc:
            if not self._failing:
                logger.warning(
                    "cannot read this machine's interface addresses; refusing the last known ones",
                    extra={"fields": {"error": str(exc), "addresses": len(self._last)}},
                )
            self._failing = True
            return self._last
        self._failing = False
        self._last = addresses
        return addresses
