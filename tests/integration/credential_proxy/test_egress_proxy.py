"""Egress over the bus and through the proxy: open, what a sandbox may reach, close.

The proxy is used as a sandbox would use it: httpx with ``proxy=<proxy_url>`` (``CONNECT`` for
https, absolute URIs for http), or a raw socket where the proxy's own answer text matters.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import httpx
import pytest

from corral.contracts.egress import EgressClosed, EgressOpened, EgressPolicy
from tests.integration.credential_proxy.conftest import CredentialProxy, new_session

pytestmark = pytest.mark.integration

PYPI_SIX = "https://pypi.org/simple/six/"


async def opened(proxy: CredentialProxy, policy: EgressPolicy, session_id: str | None = None) -> EgressOpened:
    reply = await proxy.open(session_id or new_session(), policy)
    assert reply.ok, reply.error
    return EgressOpened.model_validate(reply.result)


async def raw(proxy_url: str, request: bytes) -> tuple[int, str]:
    """Send ``request`` to the proxy on a fresh connection; its status and body."""
    where = urlsplit(proxy_url)
    assert where.hostname and where.port
    async with asyncio.timeout(20):
        reader, writer = await asyncio.open_connection(where.hostname, where.port)
        writer.write(request)
        data = await reader.read()
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


def client(proxy_url: str | None) -> httpx.AsyncClient:
    """httpx through ``proxy_url`` (``None``: directly), ignoring any proxy set in the environment but
    trusting the system's certificate authorities (``SSL_CERT_FILE``/``SSL_CERT_DIR`` included)."""
    return httpx.AsyncClient(proxy=proxy_url, trust_env=False, verify=ssl.create_default_context(), timeout=30)


async def test_open_over_the_bus_returns_a_proxy_listening_on_the_given_address(
    credential_proxy: CredentialProxy,
) -> None:
    session_id = new_session()
    egress = await opened(credential_proxy, EgressPolicy(allowed_hosts=[]), session_id)
    where = urlsplit(egress.proxy_url)
    assert egress.session_id == session_id
    assert (where.scheme, where.hostname) == ("http", "127.0.0.1") and where.port
    async with asyncio.timeout(5):
        _, writer = await asyncio.open_connection(where.hostname, where.port)
        writer.close()
    health = await credential_proxy.health()
    assert int(health.details["egress_listeners"]) >= 1
    assert health.details["vault"] == "unreachable" and health.status == "degraded"


async def test_a_host_not_in_allowed_hosts_is_refused_with_403_naming_it(credential_proxy: CredentialProxy) -> None:
    egress = await opened(credential_proxy, EgressPolicy(allowed_hosts=["pypi.org"]))
    async with client(egress.proxy_url) as http:
        response = await http.get("http://example.com/")
        assert response.status_code == 403
        assert "example.com" in response.text and "allowed_hosts" in response.text
        with pytest.raises(httpx.ProxyError, match="403"):
            await http.get("https://example.com/")
    status, text = await raw(egress.proxy_url, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert status == 403 and "example.com" in text


async def test_an_ip_literal_is_refused(credential_proxy: CredentialProxy) -> None:
    egress = await opened(credential_proxy, EgressPolicy(allowed_hosts=["pypi.org"]))
    async with client(egress.proxy_url) as http:
        with pytest.raises(httpx.ProxyError, match="403"):
            await http.get("https://151.101.0.223/")
        response = await http.get("http://151.101.0.223/")
        assert response.status_code == 403 and "IP address 151.101.0.223" in response.text


async def test_a_host_resolving_to_loopback_is_refused_even_when_allowed(credential_proxy: CredentialProxy) -> None:
    egress = await opened(credential_proxy, EgressPolicy(allowed_hosts=["localhost", "127.0.0.1"]))
    async with client(egress.proxy_url) as http:
        response = await http.get("http://localhost/")
        assert response.status_code == 403 and "loopback" in response.text and "localhost" in response.text
        response = await http.get("http://127.0.0.1/")
        assert response.status_code == 403 and "loopback" in response.text
    # the proxy's own port is on loopback too: a sandbox cannot loop back into it (or anything else here)
    port = urlsplit(egress.proxy_url).port
    status, _ = await raw(egress.proxy_url, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    assert status == 403


async def test_an_allowed_host_is_reached_through_the_proxy(credential_proxy: CredentialProxy) -> None:
    try:
        async with client(None) as direct:
            (await direct.get(PYPI_SIX)).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(
            f"PyPI is unreachable from this machine without the proxy ({exc!r}); this test needs outbound "
            "HTTPS to pypi.org. Restore it (or fix DNS) and run again.",
            pytrace=False,
        )
    egress = await opened(credential_proxy, EgressPolicy(allowed_hosts=["pypi.org"]))
    async with client(egress.proxy_url) as http:
        response = await http.get(PYPI_SIX)
        assert response.status_code == 200, response.text
        assert "six" in response.text
        with pytest.raises(httpx.ProxyError, match="403"):
            await http.get("https://files.pythonhosted.org/")  # allow_package_managers is off


async def test_reopening_keeps_the_url_and_applies_the_new_policy(credential_proxy: CredentialProxy) -> None:
    session_id = new_session()
    first = await opened(credential_proxy, EgressPolicy(allowed_hosts=["pypi.org"]), session_id)
    again = await opened(credential_proxy, EgressPolicy(allowed_hosts=[]), session_id)
    assert again.proxy_url == first.proxy_url
    status, text = await raw(first.proxy_url, b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
    assert status == 403 and "pypi.org" in text


async def test_reopening_on_another_address_moves_the_proxy(credential_proxy: CredentialProxy) -> None:
    session_id = new_session()
    first = await opened(credential_proxy, EgressPolicy(allowed_hosts=[]), session_id)
    reply = await credential_proxy.open(session_id, EgressPolicy(allowed_hosts=[]), listen_host="127.0.0.2")
    assert reply.ok, reply.error
    moved = EgressOpened.model_validate(reply.result)
    assert urlsplit(moved.proxy_url).hostname == "127.0.0.2"
    old = urlsplit(first.proxy_url)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(old.hostname, old.port)
    status, _ = await raw(moved.proxy_url, b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
    assert status == 403


async def test_close_stops_the_proxy(credential_proxy: CredentialProxy) -> None:
    session_id = new_session()
    egress = await opened(credential_proxy, EgressPolicy(allowed_hosts=["pypi.org"]), session_id)
    reply = await credential_proxy.close(session_id)
    assert reply.ok and EgressClosed.model_validate(reply.result).closed
    where = urlsplit(egress.proxy_url)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(where.hostname, where.port)
    reply = await credential_proxy.close(session_id)
    assert reply.ok and not EgressClosed.model_validate(reply.result).closed


async def test_an_address_that_is_not_this_hosts_is_refused_saying_so(credential_proxy: CredentialProxy) -> None:
    reply = await credential_proxy.open(new_session(), EgressPolicy(), listen_host="192.0.2.1")
    assert not reply.ok and reply.error is not None
    assert reply.error.type == "invalid_request_error"
    assert reply.error.details == {"error_code": "egress_listen_failed"}
    assert "192.0.2.1 is not an address" in reply.error.message


async def test_an_invalid_request_is_refused_naming_the_field(credential_proxy: CredentialProxy) -> None:
    reply = await credential_proxy.open(new_session(), EgressPolicy(), listen_host="0.0.0.0")
    assert not reply.ok and reply.error is not None and reply.error.type == "invalid_request_error"
    assert reply.error.message.startswith("listen_host:")
    reply = await credential_proxy.rpc(
        "open",
        {"session_id": new_session(), "listen_host": "127.0.0.1", "policy": {"allowed_hosts": ["https://x.test/"]}},
    )
    assert not reply.ok and reply.error is not None and "policy.allowed_hosts.0" in reply.error.message
