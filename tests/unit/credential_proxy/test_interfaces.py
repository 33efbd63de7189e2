"""This machine's interface addresses, read over rtnetlink: against ``ip -json address`` (an independent
reader of the same kernel state), and the reader's handling of the kernel's answers."""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import struct
import subprocess

import pytest

from corral.credential_proxy.hosts import IPAddress
from corral.credential_proxy.interfaces import OwnAddresses, _parse, read_interface_addresses


def test_every_address_ip_shows_is_read_ipv4_and_ipv6_link_local_included() -> None:
    ip = shutil.which("ip")
    assert ip is not None, "iproute2's ip is needed to cross-check the interface addresses"
    shown = json.loads(subprocess.run([ip, "-json", "address"], check=True, capture_output=True, text=True).stdout)
    expected = {
        ipaddress.ip_address(info["local"]) for link in shown for info in link.get("addr_info", []) if "local" in info
    }
    read = read_interface_addresses()
    assert ipaddress.ip_address("127.0.0.1") in read
    assert expected and expected <= read, (expected, read)


def _message(kind: int, body: bytes) -> bytes:
    return struct.pack("=LHHLL", 16 + len(body), kind, 0, 1, 0) + body


def _address(family: int, raw: bytes) -> bytes:
    attribute = struct.pack("=HH", 4 + len(raw), 2) + raw
    attribute += b"\0" * (-len(attribute) % 4)
    return _message(20, struct.pack("=BBBBI", family, 24, 0, 0, 2) + attribute)


def test_a_dump_spread_over_datagrams_is_read_to_its_end() -> None:
    found: set[IPAddress] = set()
    assert not _parse(_address(socket.AF_INET, bytes([192, 0, 2, 2])), found)
    v6 = ipaddress.IPv6Address("fd00::2")
    assert _parse(_address(socket.AF_INET6, v6.packed) + _message(3, struct.pack("=i", 0)), found)
    assert found == {ipaddress.IPv4Address("192.0.2.2"), v6}


def test_an_error_from_the_kernel_is_an_oserror_naming_it() -> None:
    with pytest.raises(OSError, match="Operation not permitted"):
        _parse(_message(2, struct.pack("=i", -1) + b"\0" * 16), set())
    with pytest.raises(OSError, match="malformed"):
        _parse(struct.pack("=LHHLL", 400, 20, 0, 1, 0), set())


def test_the_last_known_addresses_are_kept_when_a_read_fails() -> None:
    answers: list[frozenset[IPAddress] | OSError] = [
        frozenset({ipaddress.IPv4Address("192.0.2.2")}),
        OSError("no netlink"),
        frozenset({ipaddress.IPv4Address("192.0.2.3")}),
    ]

    def read() -> frozenset[IPAddress]:
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    own = OwnAddresses(read)
    assert own.current() == {ipaddress.IPv4Address("192.0.2.2")}, "the start-up read, kept through a failure"
    assert own.current() == {ipaddress.IPv4Address("192.0.2.3")}


def test_a_first_read_that_fails_stops_the_start() -> None:
    def read() -> frozenset[IPAddress]:
        raise OSError("no netlink")

    with pytest.raises(OSError, match="no netlink"):
        OwnAddresses(read)
