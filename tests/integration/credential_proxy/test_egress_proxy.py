"""Egress over the bus and through the proxy: open, what a sandbox may reach, close.

The proxy is used as a sandbox's relay uses it: a connection to the session's unix socket carrying
one request, a ``CONNECT`` (then TLS through the tunnel, as https clients do) or a plain-http request
with an absolute URI. httpx cannot send ``CONNECT`` over a unix socket, so both are written by hand.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from corral.contracts.egress import EGRESS_SOCKET_NAME, EgressClosed, EgressOpened, EgressPolicy
from corral.credential_proxy.settings import OpenBaoSettings
from corral.credential_proxy.vault import Vault
from tests.integration.credential_proxy.conftest import CredentialProxy, OpenBaoServer, new_session

pytestmark = pytest.mark.integration

PYPI_SIX = "https://pypi.org/simple/six/"


async def opened(proxy: CredentialProxy, policy: EgressPolicy, session_id: str | None = None) -> EgressOpened:
    reply = await proxy.open(session_id or new_session(), policy)
    assert reply.ok, reply.error
    return EgressOpened.model_validate(reply.result)


def socket_of(egress: EgressOpened) -> Path:
    return Path(egress.directory) / egress.socket_name


def present(path: str | Path) -> bool:
    """Whether anything (a dangling link or a socket included) is at ``path``."""
    return os.path.lexists(path)


async def raw(socket_path: Path, request: bytes) -> tuple[int, str]:
    """Send ``request`` on a fresh connection to the proxy's socket; its status and body."""
    async with asyncio.timeout(20):
        reader, writer = await asyncio.open_unix_connection(socket_path)
        writer.write(request)
        writer.write_eof()
        data = await reader.read()
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


async def https_get(socket_path: Path, host: str, path: str) -> tuple[int, bytes]:
    """``GET https://<host><path>`` through the proxy: ``CONNECT``, then TLS (verified against the system's
    certificate authorities, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` included) through the tunnel."""
    async with asyncio.timeout(30):
        reader, writer = await asyncio.open_unix_connection(socket_path)
        try:
            writer.write(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
            answer = await reader.readuntil(b"\r\n\r\n")
            status = int(answer.split(b" ")[1])
            if status != 200:
                writer.write_eof()
                return status, answer + await reader.read()
            await writer.start_tls(ssl.create_default_context(), server_hostname=host)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            try:
                while chunk := await reader.read(65536):
                    data += chunk
            except (ssl.SSLError, ConnectionResetError):
                pass  # a server closing without TLS close_notify: what arrived is the response
        finally:
            writer.close()
    return int(data.split(b" ")[1]), data


async def require_pypi() -> None:
    """Fail, saying why, when this machine cannot reach PyPI even without the proxy."""
    try:
        async with httpx.AsyncClient(trust_env=False, verify=ssl.create_default_context(), timeout=30) as direct:
            (await direct.get(PYPI_SIX)).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(
            f"PyPI is unreachable from this machine without the proxy ({exc!r}); this test needs outbound "
            "HTTPS to pypi.org. Restore it (or fix DNS) and run again.",
            pytrace=False,
        )


async def test_open_makes_a_socket_any_uid_may_connect_to_alone_in_a_directory_named_for_the_session(
    credential_proxy: CredentialProxy, socket_dir: Path
) -> None:
    session_id = new_session()
    egress = await opened(credential_proxy, EgressPolicy(allowed_hosts=[]), session_id)
    assert egress.session_id == session_id
    assert egress.directory == str(socket_dir / session_id) and Path(egress.directory).is_absolute()
    assert egress.socket_name == EGRESS_SOCKET_NAME == "proxy.sock"
    assert os.listdir(egress.directory) == ["proxy.sock"]
    directory = os.lstat(egress.directory)
    assert stat.S_ISDIR(directory.st_mode) and stat.S_IMODE(directory.st_mode) == 0o755
    assert stat.S_IMODE(os.stat(socket_dir).st_mode) == 0o755
    sock = os.lstat(socket_of(egress))
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o666
    async with asyncio.timeout(5):
        _, writer = await asyncio.open_unix_connection(socket_of(egress))
        writer.close()
    health = await credential_proxy.health()
    assert int(health.details["egress_listeners"]) >= 1 and health.details["egress"] == "ok"
    assert health.details["vault"] == "ok" and health.status == "ok", health
    assert health.dependencies == {"vault": "ok"}


async def test_the_vault_probe_says_when_the_real_openbao_refuses_the_login(vault: OpenBaoServer) -> None:
    """The probe behind ``details.vault`` and ``dependencies.vault``, against the real OpenBao: the
    AppRole login ``make up`` gives the credential-proxy is ``ok``; a secret id OpenBao does not know
    is ``login refused``; a token it does not know is ``token rejected``; a stopped-listening address
    is ``unreachable``. (In-process, so asked directly: the module's running proxy answers
    ``corral.health.credential-proxy`` too.)"""
    login = vault.login
    good = OpenBaoSettings(addr=vault.server.addr, role_id=login.role_id, secret_id=SecretStr(login.secret_id))
    async with Vault(good, timeout=2).running() as client:
        assert await client.probe(2.0) == "ok"
    wrong = good.model_copy(update={"secret_id": SecretStr("not-the-secret-id")})
    async with Vault(wrong, timeout=2).running() as client:
        assert await client.probe(2.0) == "login refused"
    unknown = OpenBaoSettings(addr=vault.server.addr, token=SecretStr("s.not-a-token"))
    assert await Vault(unknown, timeout=2).probe(2.0) == "token rejected"
    away = good.model_copy(update={"addr": "http://127.0.0.1:9"})
    async with Vault(away, timeout=1).running() as client:
        assert await client.probe(1.0) == "unreachable"


async def test_a_host_not_in_allowed_hosts_is_refused_with_403_naming_it(credential_proxy: CredentialProxy) -> None:
    egress = await opened(credential_proxy, EgressPolicy(allowed_hosts=["pypi.org"]))
    status, text = await raw(socket_of(egress), b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert status == 403 and "example.com" in text and "allowed_hosts" in text
    status, text = await raw(socket_of(egress), b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert status == 403 and "example.com" in text


async def test_an_ip_literal_is_refused(credential_proxy: CredentialProxy) -> None:
    egress = await opened(credential_proxy, EgressPolicy(allowed_hosts=["pypi.org"]))
    status, _ = await raw(socket_of(egress), b"CONNECT 151.101.0.223:443 HTTP/1.1\r\n\r\n")
    assert status == 403
    status, text = await raw(socket_of(egress), b"GET http://151.101.0.223/ HTTP/1.1\r\n\r\n")
    assert status == 403 and "IP address 151.101.0.223" in text


async def test_a_host_resolving_to_loopback_is_refused_even_when_allowed(credential_proxy: CredentialProxy) -> None:
    egress = await opened(credential_proxy, EgressPolicy(allowed_hosts=["localhost", "127.0.0.1"]))
    status, text = await raw(socket_of(egress), b"GET http://localhost/ HTTP/1.1\r\n\r\n")
    assert status == 403 and "loopback" in text and "localhost" in text
    status, text = await raw(socket_of(egress), b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n")
    assert status == 403 and "loopback" in text


async def test_an_allowed_host_is_reached_through_the_proxy(credential_proxy: CredentialProxy) -> None:
    await require_pypi()
    egress = await opened(credential_proxy, EgressPolicy(allowed_hosts=["pypi.org"]))
    status, response = await https_get(socket_of(egress), "pypi.org", "/simple/six/")
    assert status == 200, response[:500]
    assert b"six" in response
    status, response = await https_get(socket_of(egress), "files.pythonhosted.org", "/")
    assert status == 403, "allow_package_managers is off"


async def test_each_socket_applies_its_own_sessions_policy(credential_proxy: CredentialProxy) -> None:
    await require_pypi()
    allowed = await opened(credential_proxy, EgressPolicy(allowed_hosts=["pypi.org"]))
    closed = await opened(credential_proxy, EgressPolicy(allowed_hosts=[]))
    assert allowed.directory != closed.directory
    status, _ = await https_get(socket_of(allowed), "pypi.org", "/simple/six/")
    assert status == 200
    status, text = await raw(socket_of(closed), b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
    assert status == 403 and "pypi.org" in text


async def test_reopening_keeps_the_socket_and_applies_the_new_policy(credential_proxy: CredentialProxy) -> None:
    session_id = new_session()
    first = await opened(credential_proxy, EgressPolicy(allowed_hosts=["pypi.org"]), session_id)
    inode = os.lstat(socket_of(first)).st_ino
    again = await opened(credential_proxy, EgressPolicy(allowed_hosts=[]), session_id)
    assert again == first
    assert os.lstat(socket_of(again)).st_ino == inode, "the same socket keeps serving"
    status, text = await raw(socket_of(first), b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
    assert status == 403 and "pypi.org" in text


async def test_close_removes_the_socket_and_its_directory(credential_proxy: CredentialProxy) -> None:
    session_id = new_session()
    egress = await opened(credential_proxy, EgressPolicy(allowed_hosts=["pypi.org"]), session_id)
    reply = await credential_proxy.close(session_id)
    assert reply.ok and EgressClosed.model_validate(reply.result).closed
    assert not present(socket_of(egress)) and not present(egress.directory)
    with pytest.raises(FileNotFoundError):
        await asyncio.open_unix_connection(socket_of(egress))
    reply = await credential_proxy.close(session_id)
    assert reply.ok and not EgressClosed.model_validate(reply.result).closed


async def test_an_invalid_request_is_refused_naming_the_field(credential_proxy: CredentialProxy) -> None:
    reply = await credential_proxy.rpc(
        "open", {"session_id": new_session(), "policy": {"allowed_hosts": ["https://x.test/"]}}
    )
    assert not reply.ok and reply.error is not None and reply.error.type == "invalid_request_error"
    assert "policy.allowed_hosts.0" in reply.error.message
    reply = await credential_proxy.rpc("open", {"session_id": "../etc", "policy": {}})
    assert not reply.ok and reply.error is not None and reply.error.message.startswith("session_id:")
    # the address a sandbox reaches its proxy on is no longer the caller's to choose
    reply = await credential_proxy.rpc("open", {"session_id": new_session(), "listen_host": "127.0.0.1", "policy": {}})
    assert not reply.ok and reply.error is not None and reply.error.message.startswith("listen_host:")
