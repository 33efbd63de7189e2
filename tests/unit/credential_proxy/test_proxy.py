"""One session's proxy carrying connections, over socket pairs: a fake resolver and fake destinations.

Each test hands the proxy one end of a socket pair (as the listener does with an accepted
connection) and plays the sandbox on the other end; destinations are socket pairs too, played by a
script, so nothing here touches a network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from corral.contracts.egress import EgressPolicy
from corral.credential_proxy.hosts import IPAddress
from corral.credential_proxy.proxy import SessionProxy
from corral.credential_proxy.settings import EgressSettings

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@dataclass
class FakeNet:
    """Names and the addresses they resolve to; every connection made, and what its destination did."""

    names: dict[str, list[str]] = field(default_factory=dict)
    script: Script = echo
    resolved: list[str] = field(default_factory=list)
    connected: list[tuple[IPAddress, int]] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    scripts: list[asyncio.Task[None]] = field(default_factory=list)
    #: This machine's interface addresses (a public one among them).
    own: set[str] = field(default_factory=lambda: {"127.0.0.1", "::1", "93.184.215.14", "2a01:4f8::2"})

    def own_addresses(self) -> frozenset[IPAddress]:
        return frozenset(ipaddress.ip_address(a) for a in self.own)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.resolved.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(a) for a in self.names[host]]

    async def open_connection(self, address: IPAddress, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.connected.append((address, port))
        ours, theirs = socket.socketpair()
        far = await asyncio.open_connection(sock=theirs)
        self.scripts.append(asyncio.create_task(self.script(*far)))
        return await asyncio.open_connection(sock=ours)


def make_proxy(net: FakeNet, policy: EgressPolicy, **settings: Any) -> SessionProxy:
    return SessionProxy(
        "sesn_test",
        policy,
        EgressSettings(**settings),
        resolve=net.resolve,
        open_connection=net.open_connection,
        own_addresses=net.own_addresses,
    )


async def sandbox_connection(
    proxy: SessionProxy,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Task[None]]:
    """Hand the proxy one accepted connection; the sandbox's end of it, and the proxy's task."""
    sandbox_end, proxy_end = socket.socketpair()
    carry = proxy.admit(proxy_end)
    assert carry is not None
    task = asyncio.create_task(carry)
    reader, writer = await asyncio.open_connection(sock=sandbox_end)
    return reader, writer, task


async def exchange(proxy: SessionProxy, request: bytes) -> bytes:
    """Send ``request``, read until the proxy closes."""
    async with asyncio.timeout(5):
        reader, writer, task = await sandbox_connection(proxy)
        writer.write(request)
        data = await reader.read()
        writer.close()
        await task
    return data


def status_and_text(data: bytes) -> tuple[int, str]:
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


LIMITED = EgressPolicy(allowed_hosts=["pypi.org", "*.example.com", "localhost", "10.0.0.7", "151.101.64.7"])


# --- refusals ----------------------------------------------------------------------------------------------
async def test_a_host_not_in_the_allowed_hosts_gets_403_naming_it_and_is_never_resolved() -> None:
    net = FakeNet(names={"evil.test": ["151.101.64.1"]})
    status, text = status_and_text(await exchange(make_proxy(net, LIMITED), b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n"))
    assert status == 403
    assert "evil.test" in text and "allowed_hosts" in text and text.count("\n") == 1
    assert net.resolved == [] and net.connected == []


async def test_a_refusal_is_logged_at_info_with_session_host_and_reason_but_no_headers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="corral.credential_proxy")
    request = b"GET http://evil.test/ HTTP/1.1\r\nAuthorization: Bearer canary-5ecret\r\n\r\n"
    status, _ = status_and_text(await exchange(make_proxy(FakeNet(), LIMITED), request))
    assert status == 403
    [record] = [r for r in caplog.records if r.getMessage() == "egress refused"]
    fields = record.__dict__["fields"]
    assert record.levelno == logging.INFO
    assert fields["session_id"] == "sesn_test" and fields["host"] == "evil.test" and "allowed" in fields["reason"]
    assert "canary-5ecret" not in caplog.text


async def test_an_ip_literal_is_refused_unless_listed_exactly() -> None:
    net = FakeNet()
    status, text = status_and_text(
        await exchange(make_proxy(net, LIMITED), b"CONNECT 151.101.64.1:443 HTTP/1.1\r\n\r\n")
    )
    assert status == 403 and "IP address 151.101.64.1" in text
    status, text = status_and_text(await exchange(make_proxy(net, LIMITED), b"CONNECT 10.0.0.7:443 HTTP/1.1\r\n\r\n"))
    assert status == 403 and "private" in text, "10.0.0.7 is listed, but it is not a public address"
    assert net.connected == []
    async with asyncio.timeout(5):
        reader, writer, task = await sandbox_connection(make_proxy(net, LIMITED))
        writer.write(b"CONNECT 151.101.64.7:443 HTTP/1.1\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.close()
        await task
    assert net.connected == [(ipaddress.ip_address("151.101.64.7"), 443)]


async def test_an_allowed_name_that_resolves_to_loopback_is_refused() -> None:
    net = FakeNet(names={"localhost": ["127.0.0.1", "::1"]})
    status, text = status_and_text(await exchange(make_proxy(net, LIMITED), b"CONNECT localhost:443 HTTP/1.1\r\n\r\n"))
    assert status == 403 and "localhost" in text and "127.0.0.1" in text and "loopback" in text
    assert net.connected == []


async def test_a_name_is_refused_when_any_of_its_addresses_is_not_public() -> None:
    net = FakeNet(names={"a.example.com": ["151.101.0.223", "169.254.169.254"]})
    status, text = status_and_text(
        await exchange(make_proxy(net, LIMITED), b"CONNECT a.example.com:443 HTTP/1.1\r\n\r\n")
    )
    assert status == 403 and "169.254.169.254" in text and "link-local" in text
    assert net.connected == []


async def test_unrestricted_still_refuses_private_addresses_and_ports_outside_the_setting() -> None:
    net = FakeNet(names={"intranet.corp": ["10.0.0.5"]})
    proxy = make_proxy(net, EgressPolicy(allowed_hosts=None))
    status, text = status_and_text(await exchange(proxy, b"CONNECT intranet.corp:443 HTTP/1.1\r\n\r\n"))
    assert status == 403 and "private" in text
    status, text = status_and_text(await exchange(proxy, b"CONNECT 151.101.0.223:22 HTTP/1.1\r\n\r\n"))
    assert status == 403 and "port 22" in text and "80, 443" in text
    assert net.connected == []


UNRESTRICTED = EgressPolicy(allowed_hosts=None)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"CONNECT 93.184.215.14:443 HTTP/1.1\r\n\r\n",
        b"GET http://93.184.215.14/canary HTTP/1.1\r\n\r\n",
        b"CONNECT [::ffff:93.184.215.14]:443 HTTP/1.1\r\n\r\n",
        b"CONNECT [64:ff9b::5db8:d70e]:443 HTTP/1.1\r\n\r\n",
        b"CONNECT [2a01:4f8::2]:443 HTTP/1.1\r\n\r\n",
        b"CONNECT this-machine.example:443 HTTP/1.1\r\n\r\n",
        b"GET http://this-machine.example/canary HTTP/1.1\r\n\r\n",
    ],
)
async def test_an_address_of_this_machine_is_refused_by_address_and_by_name_even_unrestricted(
    request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="corral.credential_proxy")
    net = FakeNet(names={"this-machine.example": ["151.101.64.1", "93.184.215.14"]})
    status, text = status_and_text(await exchange(make_proxy(net, UNRESTRICTED), request_bytes))
    assert status == 403 and "an address of this machine" in text
    assert "CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES" in text
    assert net.connected == []
    [record] = [r for r in caplog.records if r.getMessage() == "egress refused"]
    assert "an address of this machine" in record.__dict__["fields"]["reason"]


async def test_this_machines_addresses_are_read_again_for_every_destination() -> None:
    net = FakeNet(names={"new.example": ["151.101.64.9"]})
    proxy = make_proxy(net, UNRESTRICTED)
    async with asyncio.timeout(5):
        reader, writer, task = await sandbox_connection(proxy)
        writer.write(b"CONNECT new.example:443 HTTP/1.1\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.close()
        await task
    net.own.add("151.101.64.9")  # an interface got this address since
    status, text = status_and_text(await exchange(proxy, b"CONNECT new.example:443 HTTP/1.1\r\n\r\n"))
    assert status == 403 and "an address of this machine" in text
    assert len(net.connected) == 1


async def test_documentation_addresses_are_refused_unless_the_operator_allows_them() -> None:
    net = FakeNet(names={"deb.debian.org": ["203.0.113.80"], "other.example": ["203.0.113.81"]})
    status, text = status_and_text(
        await exchange(make_proxy(net, UNRESTRICTED), b"CONNECT deb.debian.org:443 HTTP/1.1\r\n\r\n")
    )
    assert status == 403 and "203.0.113.80" in text and "documentation" in text
    assert "CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES" in text
    allowing = make_proxy(net, UNRESTRICTED, allow_addresses=["203.0.113.80", "127.0.0.1"])
    async with asyncio.timeout(5):
        reader, writer, task = await sandbox_connection(allowing)
        writer.write(b"CONNECT deb.debian.org:443 HTTP/1.1\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.close()
        await task
    assert net.connected == [(ipaddress.ip_address("203.0.113.80"), 443)]
    status, text = status_and_text(await exchange(allowing, b"CONNECT other.example:443 HTTP/1.1\r\n\r\n"))
    assert status == 403 and "203.0.113.81" in text
    # the operator's list overrides the floor, not the session's allowed hosts
    status, text = status_and_text(
        await exchange(
            make_proxy(net, LIMITED, allow_addresses=["203.0.113.80"]), b"CONNECT deb.debian.org:443 HTTP/1.1\r\n\r\n"
        )
    )
    assert status == 403 and "allowed_hosts" in text


@pytest.mark.parametrize(
    ("request_bytes", "says"),
    [
        (b"HELLO\r\n\r\n", "request line"),
        (b"GET /simple/ HTTP/1.1\r\nHost: pypi.org\r\n\r\n", "absolute http:// URI"),
        (b"CONNECT pypi.org HTTP/1.1\r\n\r\n", "host:port"),
        (b"CONNECT 2130706433:443 HTTP/1.1\r\n\r\n", "not a host name"),
    ],
)
async def test_a_malformed_request_gets_400_saying_why(request_bytes: bytes, says: str) -> None:
    status, text = status_and_text(await exchange(make_proxy(FakeNet(), LIMITED), request_bytes))
    assert status == 400 and says in text


async def test_a_name_that_does_not_resolve_gets_502() -> None:
    status, text = status_and_text(
        await exchange(make_proxy(FakeNet(), LIMITED), b"CONNECT nx.example.com:443 HTTP/1.1\r\n\r\n")
    )
    assert status == 502 and "nx.example.com" in text and "resolve" in text


async def test_a_destination_that_refuses_the_connection_gets_502() -> None:
    net = FakeNet(names={"pypi.org": ["151.101.0.223"]})

    async def refused(address: IPAddress, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise ConnectionRefusedError(111, "Connection refused")

    proxy = SessionProxy(
        "sesn_test",
        LIMITED,
        EgressSettings(),
        resolve=net.resolve,
        open_connection=refused,
        own_addresses=net.own_addresses,
    )
    status, text = status_and_text(await exchange(proxy, b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n"))
    assert status == 502 and "151.101.0.223" in text and "Connection refused" in text


async def test_an_oversized_head_gets_431_and_a_silent_client_408() -> None:
    proxy = make_proxy(FakeNet(), LIMITED, max_head_bytes=4096, head_timeout_s=0.05)
    status, _ = status_and_text(
        await exchange(proxy, b"GET http://pypi.org/ HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n")
    )
    assert status == 431
    status, text = status_and_text(await exchange(proxy, b"CONNECT pypi.org:443 HTTP/1.1\r\n"))
    assert status == 408 and "request head" in text


# --- what is allowed ---------------------------------------------------------------------------------------
async def test_connect_to_an_allowed_host_tunnels_to_the_vetted_address() -> None:
    net = FakeNet(names={"pypi.org": ["151.101.0.223", "2a04:4e42::223"]})
    proxy = make_proxy(net, LIMITED)
    async with asyncio.timeout(5):
        reader, writer, task = await sandbox_connection(proxy)
        writer.write(b"CONNECT PyPI.org.:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\nearly bytes|")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
        assert proxy.connections == 1
        writer.write(b"more")
        assert await reader.readexactly(16) == b"early bytes|more"
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await task
    assert net.connected == [(ipaddress.ip_address("151.101.0.223"), 443)]
    assert proxy.connections == 0


async def test_plain_http_is_forwarded_once_in_origin_form_with_exactly_its_body() -> None:
    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        net.received.append(await reader.readuntil(b"\r\n\r\n") + await reader.readexactly(5))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    net = FakeNet(names={"pypi.org": ["151.101.0.223"]}, script=origin)
    request = (
        b"POST http://pypi.org/upload HTTP/1.1\r\nHost: pypi.org\r\nProxy-Authorization: x\r\n"
        b"Content-Length: 5\r\n\r\nhello"
        b"GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n"  # a second request is never forwarded
    )
    data = await exchange(make_proxy(net, LIMITED), request)
    assert data == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    assert net.received == [
        b"POST /upload HTTP/1.1\r\nHost: pypi.org\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    ]


async def test_a_chunked_request_body_is_forwarded_to_its_last_chunk() -> None:
    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readuntil(b"0\r\n\r\n")
        net.received.append(head + body)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        writer.close()

    net = FakeNet(names={"pypi.org": ["151.101.0.223"]}, script=origin)
    body = b"5;ext=1\r\nhello\r\n0\r\n\r\n"
    request = b"PUT http://pypi.org/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"junk"
    assert await exchange(make_proxy(net, LIMITED), request) == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert net.received[0].endswith(b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body)


async def test_a_new_policy_applies_to_the_next_connection() -> None:
    net = FakeNet(names={"pypi.org": ["151.101.0.223"], "crates.io": ["151.101.0.224"]})
    proxy = make_proxy(net, EgressPolicy(allowed_hosts=[]))
    status, _ = status_and_text(await exchange(proxy, b"CONNECT crates.io:443 HTTP/1.1\r\n\r\n"))
    assert status == 403
    proxy.policy = EgressPolicy(allowed_hosts=[], allow_package_managers=True)
    async with asyncio.timeout(5):
        reader, writer, task = await sandbox_connection(proxy)
        writer.write(b"CONNECT crates.io:443 HTTP/1.1\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.close()
        await task


# --- limits ------------------------------------------------------------------------------------------------
async def test_connections_beyond_the_limit_get_503() -> None:
    net = FakeNet(names={"pypi.org": ["151.101.0.223"]})
    proxy = make_proxy(net, LIMITED, max_connections=1)
    async with asyncio.timeout(5):
        reader, writer, task = await sandbox_connection(proxy)
        writer.write(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        status, text = status_and_text(await exchange(proxy, b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n"))
        assert status == 503 and "1 connections" in text
        writer.close()
        await task
    status, _ = status_and_text(await exchange(proxy, b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n"))
    assert status == 403, "the slot is free again once the first connection ended"


async def test_an_idle_tunnel_is_closed() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    net = FakeNet(names={"pypi.org": ["151.101.0.223"]}, script=silent)
    proxy = make_proxy(net, LIMITED, idle_timeout_s=0.05)
    async with asyncio.timeout(5):
        reader, writer, task = await sandbox_connection(proxy)
        writer.write(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        assert await reader.read() == b""  # closed by the proxy, though neither side closed
        writer.close()
        await task
