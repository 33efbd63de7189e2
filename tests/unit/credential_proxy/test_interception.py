"""Credentials at egress through one session's proxy, over socket pairs: a real TLS server (its own
test CA) plays the bound host, the test plays the sandbox trusting only the session's CA."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.contracts.egress import EgressPolicy
from corral.credential_proxy.egress_credentials import EgressCredentials
from corral.credential_proxy.interception import close_quietly, secure_client, upstream_context
from corral.credential_proxy.proxy import SessionProxy
from corral.credential_proxy.session_credentials import EnvironmentCredential
from corral.credential_proxy.settings import EgressSettings
from tests.https_site import TestAuthority
from tests.unit.credential_proxy.test_proxy import FakeNet, sandbox_connection

SECRET = "corralcanary-unit-5ecret-value"
BOUND = "api.example.com"
POLICY = EgressPolicy(allowed_hosts=[BOUND, "other.example.com"], workspace_id="wrkspc_1", vault_ids=["vlt_1"])


@dataclass
class FakeSource:
    """One ``environment_variable`` credential bound to ``BOUND``."""

    body: bool = False
    asked: list[str] = field(default_factory=list)

    async def environment_names(
        self, workspace_id: str, session_id: str, vault_ids: tuple[str, ...]
    ) -> list[tuple[str, str]]:
        return [("vcrd_1", "API_TOKEN")]

    async def environment_credentials(
        self, workspace_id: str, session_id: str, vault_ids: tuple[str, ...], host: str
    ) -> list[EnvironmentCredential]:
        self.asked.append(host)
        if host != BOUND:
            return []
        return [EnvironmentCredential("vcrd_1", "vlt_1", "API_TOKEN", SECRET, header=True, body=self.body)]

    async def environment_bound(
        self, workspace_id: str, session_id: str, vault_ids: tuple[str, ...], host: str
    ) -> list[tuple[str, str]]:
        return [("vcrd_1", "vlt_1")] if host == BOUND else []

    def forget(self, session_id: str) -> None:
        pass


@dataclass
class Upstream:
    """What the TLS server received (raw HTTP after TLS)."""

    received: bytearray = field(default_factory=bytearray)


def tls_server(context: ssl.SSLContext, upstream: Upstream, answers: int = 1):  # type: ignore[no-untyped-def]
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        secured = await secure_client(reader, writer, context)
        for _ in range(answers):
            head = await reader.readuntil(b"\r\n\r\n")
            upstream.received += head
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            if length:
                upstream.received += await reader.readexactly(length)
            secured.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            await secured.drain()
        await close_quietly(secured)  # closed, and its transport under TLS with it, before the function ends

    return script


def make(net: FakeNet, source: FakeSource, upstream_ca: Path) -> tuple[SessionProxy, EgressCredentials]:
    credentials = EgressCredentials(source)
    proxy = SessionProxy(
        "sesn_test",
        POLICY,
        EgressSettings(),
        resolve=net.resolve,
        open_connection=net.open_connection,
        own_addresses=net.own_addresses,
        credentials=credentials,
        upstream_tls=upstream_context(upstream_ca),
    )
    return proxy, credentials


async def through_tls(proxy: SessionProxy, ca_pem: str, host: str, requests: list[bytes]) -> list[bytes]:
    """CONNECT, TLS trusting ``ca_pem`` only, send each request, read each answer."""
    reader, writer, task = await sandbox_connection(proxy)
    writer.write(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    trust = ssl.create_default_context(cadata=ca_pem)
    trust.verify_flags |= ssl.VERIFY_X509_STRICT  # what Python 3.13 clients check by default
    await writer.start_tls(trust, server_hostname=host)
    answers = []
    for request in requests:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        answers.append(head + await reader.readexactly(3))
    writer.close()
    await task
    return answers


@pytest.fixture
def upstream_ca(tmp_path: Path) -> tuple[TestAuthority, Path]:
    authority = TestAuthority.create()
    return authority, authority.write(tmp_path / "upstream-ca.pem")


async def test_a_bound_host_over_https_receives_the_secret_in_headers_not_in_the_body(
    upstream_ca: tuple[TestAuthority, Path], tmp_path: Path
) -> None:
    authority, ca_file = upstream_ca
    upstream = Upstream()
    net = FakeNet(
        names={BOUND: ["151.101.64.7"]}, script=tls_server(authority.server_context(BOUND, tmp_path), upstream, 2)
    )
    source = FakeSource()
    proxy, credentials = make(net, source, ca_file)
    given = await credentials.environment("sesn_test", POLICY)
    placeholder = given.environment["API_TOKEN"]
    assert given.ca_certificate is not None and SECRET not in placeholder
    body = f'{{"token": "{placeholder}"}}'.encode()
    first = f"GET /a HTTP/1.1\r\nHost: {BOUND}\r\nAuthorization: Bearer {placeholder}\r\n\r\n".encode()
    second = f"POST /b?t={placeholder} HTTP/1.1\r\nHost: {BOUND}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    async with asyncio.timeout(10):
        answers = await through_tls(proxy, given.ca_certificate, BOUND, [first, second])
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)  # two requests on one kept-alive connection
    received = bytes(upstream.received)
    assert f"Authorization: Bearer {SECRET}".encode() in received
    assert f"/b?t={placeholder}".encode() in received  # the query is not an injection location
    assert body in received  # body injection is off for this credential


async def test_a_body_credential_is_substituted_in_the_body_with_its_new_length(
    upstream_ca: tuple[TestAuthority, Path], tmp_path: Path
) -> None:
    authority, ca_file = upstream_ca
    upstream = Upstream()
    net = FakeNet(
        names={BOUND: ["151.101.64.7"]}, script=tls_server(authority.server_context(BOUND, tmp_path), upstream)
    )
    proxy, credentials = make(net, FakeSource(body=True), ca_file)
    given = await credentials.environment("sesn_test", POLICY)
    assert given.ca_certificate is not None
    placeholder = given.environment["API_TOKEN"]
    body = f"token={placeholder}".encode()
    request = f"POST / HTTP/1.1\r\nHost: {BOUND}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    async with asyncio.timeout(10):
        await through_tls(proxy, given.ca_certificate, BOUND, [request])
    received = bytes(upstream.received)
    expected = f"token={SECRET}".encode()
    assert received.endswith(expected) and f"Content-Length: {len(expected)}".encode() in received


async def test_a_host_without_a_bound_credential_is_tunnelled_blind_with_the_placeholder(
    upstream_ca: tuple[TestAuthority, Path],
) -> None:
    _, ca_file = upstream_ca
    net = FakeNet(names={"other.example.com": ["151.101.64.8"]})  # echo: whatever the sandbox sends comes back
    proxy, credentials = make(net, FakeSource(), ca_file)
    placeholder = (await credentials.environment("sesn_test", POLICY)).environment["API_TOKEN"]
    reader, writer, task = await sandbox_connection(proxy)
    async with asyncio.timeout(5):
        writer.write(b"CONNECT other.example.com:443 HTTP/1.1\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        sent = f"not TLS at all: Bearer {placeholder}".encode()
        writer.write(sent)
        assert await reader.readexactly(len(sent)) == sent  # bytes as sent, no interception
        writer.close()
        await task


async def test_a_server_the_proxy_cannot_verify_gets_no_secret_and_the_sandbox_a_502(tmp_path: Path) -> None:
    impostor = TestAuthority.create()  # not the CA the proxy trusts
    trusted = TestAuthority.create().write(tmp_path / "trusted.pem")
    upstream = Upstream()
    net = FakeNet(
        names={BOUND: ["151.101.64.7"]}, script=tls_server(impostor.server_context(BOUND, tmp_path), upstream)
    )
    proxy, credentials = make(net, FakeSource(), trusted)
    reader, writer, task = await sandbox_connection(proxy)
    async with asyncio.timeout(10):
        writer.write(f"CONNECT {BOUND}:443 HTTP/1.1\r\n\r\n".encode())
        answer = await reader.read()
        writer.close()
        await task
    assert answer.startswith(b"HTTP/1.1 502") and b"could not be verified" in answer
    assert SECRET.encode() not in bytes(upstream.received)
    [noted] = credentials.take_failures("sesn_test")  # for the harness to log
    assert (noted.credential_id, noted.vault_id, noted.host) == ("vcrd_1", "vlt_1", BOUND)
    assert "could not be verified" in noted.reason


async def test_plain_http_to_a_bound_host_is_substituted_and_to_another_host_is_not(
    upstream_ca: tuple[TestAuthority, Path],
) -> None:
    _, ca_file = upstream_ca
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        writer.close()

    net = FakeNet(names={BOUND: ["151.101.64.7"], "other.example.com": ["151.101.64.8"]}, script=record)
    proxy, credentials = make(net, FakeSource(), ca_file)
    placeholder = (await credentials.environment("sesn_test", POLICY)).environment["API_TOKEN"]
    for host in (BOUND, "other.example.com"):
        reader, writer, task = await sandbox_connection(proxy)
        async with asyncio.timeout(5):
            writer.write(f"GET http://{host}/x HTTP/1.1\r\nX-Token: {placeholder}\r\n\r\n".encode())
            await reader.read()
            writer.close()
            await task
    assert f"X-Token: {SECRET}".encode() in seen[0]
    assert f"X-Token: {placeholder}".encode() in seen[1] and SECRET.encode() not in seen[1]


async def connect_answer(proxy: SessionProxy, host: str, port: int = 443) -> bytes:
    reader, writer, task = await sandbox_connection(proxy)
    async with asyncio.timeout(10):
        writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\n\r\n".encode())
        answer = await reader.read()
        writer.close()
        await task
    return answer


async def test_a_bound_host_that_cannot_be_reached_is_noted_once_per_credential_until_taken(tmp_path: Path) -> None:
    ca_file = TestAuthority.create().write(tmp_path / "ca.pem")
    net = FakeNet(names={})  # no name resolves: every host is unreachable
    proxy, credentials = make(net, FakeSource(), ca_file)
    for _ in range(3):
        assert (await connect_answer(proxy, BOUND)).startswith(b"HTTP/1.1 502")
    assert (await connect_answer(proxy, "other.example.com")).startswith(b"HTTP/1.1 502")  # no credential
    [noted] = credentials.take_failures("sesn_test")
    assert (noted.credential_id, noted.vault_id, noted.host, noted.port, noted.attempts) == (
        "vcrd_1",
        "vlt_1",
        BOUND,
        443,
        3,
    )
    assert BOUND in noted.reason and SECRET not in noted.model_dump_json()
    assert credentials.take_failures("sesn_test") == []
    assert (await connect_answer(proxy, BOUND)).startswith(b"HTTP/1.1 502")
    assert len(credentials.take_failures("sesn_test")) == 1  # a new note after a take
    credentials.forget("sesn_test")  # the egress closed: notes go with it
    assert credentials.take_failures("sesn_test") == []


async def test_a_bound_host_the_policy_refuses_is_noted_with_the_403s_reason(tmp_path: Path) -> None:
    ca_file = TestAuthority.create().write(tmp_path / "ca.pem")
    net = FakeNet(names={BOUND: ["151.101.64.7"]})
    proxy, credentials = make(net, FakeSource(), ca_file)
    proxy.policy = POLICY.model_copy(update={"allowed_hosts": ["other.example.com"]})
    answer = await connect_answer(proxy, BOUND)
    assert answer.startswith(b"HTTP/1.1 403") and net.connected == []
    [noted] = credentials.take_failures("sesn_test")
    assert noted.credential_id == "vcrd_1" and noted.reason in answer.decode()
