"""Each session's unix socket and directory, and ``Egress`` opening, closing and restoring them, with the
grants in an in-memory bucket and a fake resolver: nothing here touches a network or NATS."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.bus import Entry
from corral.contracts.egress import EgressPolicy
from corral.credential_proxy.egress import NOT_CONFIGURED, Egress, NotConfigured
from corral.credential_proxy.grants import Grants
from corral.credential_proxy.listener import CannotListen, Listener
from corral.credential_proxy.proxy import SessionProxy
from corral.credential_proxy.settings import EgressSettings
from tests.unit.credential_proxy.test_proxy import FakeNet, status_and_text

SESSION = "sesn_01JD3ABCDEFGHJKMNPQRSTVWXY"


class MemoryBucket:
    """The part of ``KeyValueBucket`` that ``Grants`` uses."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    async def get(self, key: str) -> Entry | None:
        return Entry(self.values[key], 1) if key in self.values else None

    async def put(self, key: str, value: bytes) -> int:
        self.values[key] = value
        return 1

    async def delete(self, key: str) -> None:
        self.values.pop(key, None)

    async def keys(self) -> list[str]:
        return list(self.values)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A short temporary directory: a unix socket's path has at most 107 bytes, which pytest's own
    temporary directories plus a session id can exceed."""
    with tempfile.TemporaryDirectory(prefix="corral-") as path:
        yield Path(path)


@pytest.fixture
def umask_077() -> Iterator[None]:
    """A strict umask: the modes must not depend on it."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def session_proxy(session_id: str = SESSION, policy: EgressPolicy | None = None) -> SessionProxy:
    net = FakeNet()
    return SessionProxy(
        session_id,
        policy or EgressPolicy(allowed_hosts=[]),
        EgressSettings(),
        resolve=net.resolve,
        open_connection=net.open_connection,
        own_addresses=net.own_addresses,
    )


async def ask(path: Path, request: bytes) -> tuple[int, str]:
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(request)
        writer.write_eof()
        data = await reader.read()
        writer.close()
    return status_and_text(data)


# --- Listener ------------------------------------------------------------------------------------------
async def test_bind_makes_a_0755_directory_holding_only_a_0666_socket_whatever_the_umask(
    tmp_path: Path, umask_077: None
) -> None:
    directory = tmp_path / SESSION
    listener = Listener.bind(session_proxy(), directory)
    try:
        assert listener.path == directory / "proxy.sock"
        assert os.listdir(directory) == ["proxy.sock"]
        assert mode(directory) == 0o755 and stat.S_ISSOCK(os.lstat(listener.path).st_mode)
        assert mode(listener.path) == 0o666
    finally:
        listener.close()
    assert not listener.path.exists() and directory.is_dir(), "close removes the socket, not the directory"


async def test_the_socket_carries_connections_to_its_sessions_proxy(tmp_path: Path) -> None:
    listener = Listener.bind(session_proxy(), tmp_path / SESSION)
    serving = asyncio.create_task(listener.serve())
    try:
        status, text = await ask(listener.path, b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n")
        assert status == 403 and "evil.test" in text
    finally:
        serving.cancel()
        await asyncio.wait([serving])
    assert not listener.path.exists(), "a stopped listener leaves no socket behind"


async def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    directory = tmp_path / SESSION
    directory.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(directory / "proxy.sock"))
    stale.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_unix_connection(directory / "proxy.sock")
    listener = Listener.bind(session_proxy(), directory)
    serving = asyncio.create_task(listener.serve())
    try:
        assert mode(directory) == 0o755, "an existing directory is made 0755 too"
        status, _ = await ask(listener.path, b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n")
        assert status == 403
    finally:
        serving.cancel()
        await asyncio.wait([serving])


async def test_close_leaves_a_socket_that_is_no_longer_its_own(tmp_path: Path) -> None:
    first = Listener.bind(session_proxy(), tmp_path / SESSION)
    second = Listener.bind(session_proxy(), tmp_path / SESSION)  # replaces the first one's file
    first.close()
    assert second.path.exists()
    second.remove()
    assert not (tmp_path / SESSION).exists()


async def test_a_path_too_long_for_a_unix_socket_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    directory = tmp_path / ("d" * 100) / SESSION
    with pytest.raises(CannotListen, match="107 bytes; set CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR to a shorter"):
        Listener.bind(session_proxy(), directory)
    assert not directory.exists()


async def test_a_file_where_the_directory_goes_is_refused(tmp_path: Path) -> None:
    (tmp_path / SESSION).write_text("")
    with pytest.raises(CannotListen, match="exists and is not a directory"):
        Listener.bind(session_proxy(), tmp_path / SESSION)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CannotListen, match="is not a directory"):
        Listener.bind(session_proxy(), tmp_path / "linked")
    assert os.listdir(tmp_path / "elsewhere") == []


# --- Egress ---------------------------------------------------------------------------------------------
def egress(socket_dir: Path | None, bucket: MemoryBucket) -> Egress:
    net = FakeNet()
    return Egress(
        EgressSettings(socket_dir=socket_dir),
        Grants(bucket),  # type: ignore[arg-type]
        resolve=net.resolve,
        open_connection=net.open_connection,
        own_addresses=net.own_addresses,
    )


async def test_egress_makes_its_socket_dir_and_opens_idempotently(tmp_path: Path, umask_077: None) -> None:
    socket_dir = tmp_path / "run" / "egress"
    bucket = MemoryBucket()
    async with egress(socket_dir, bucket).running() as proxies:
        assert mode(socket_dir) == 0o755
        listener = await proxies.open(SESSION, EgressPolicy(allowed_hosts=[]))
        assert listener.directory == socket_dir / SESSION
        again = await proxies.open(SESSION, EgressPolicy(allowed_hosts=["pypi.org"]))
        assert again is listener and listener.proxy.policy.allowed_hosts == ["pypi.org"]
        assert json.loads(bucket.values[SESSION])["policy"]["allowed_hosts"] == ["pypi.org"]
        assert set(json.loads(bucket.values[SESSION])) == {"session_id", "policy", "at", "host"}
        assert proxies.count() == 1
        assert await proxies.close(SESSION)
        assert not (socket_dir / SESSION).exists() and SESSION not in bucket.values
        assert not await proxies.close(SESSION)


async def test_reopening_makes_the_socket_again_when_its_file_was_removed(tmp_path: Path) -> None:
    async with egress(tmp_path, MemoryBucket()).running() as proxies:
        first = await proxies.open(SESSION, EgressPolicy(allowed_hosts=[]))
        first.path.unlink()  # as a cleaner of temporary files would
        again = await proxies.open(SESSION, EgressPolicy(allowed_hosts=[]))
        assert again is not first and again.path == first.path and proxies.count() == 1
        status, _ = await ask(again.path, b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
        assert status == 403


async def test_egress_restores_every_grant_on_its_socket(tmp_path: Path) -> None:
    bucket = MemoryBucket()
    async with egress(tmp_path, bucket).running() as proxies:
        await proxies.open(SESSION, EgressPolicy(allowed_hosts=[]))
    assert SESSION in bucket.values and not (tmp_path / SESSION / "proxy.sock").exists()
    async with egress(tmp_path, bucket).running() as proxies:
        assert await proxies.restore() == 1
        status, _ = await ask(tmp_path / SESSION / "proxy.sock", b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
        assert status == 403


async def test_without_a_socket_dir_open_says_egress_is_not_configured(tmp_path: Path) -> None:
    bucket = MemoryBucket()
    bucket.values[SESSION] = json.dumps({"session_id": SESSION, "policy": {}, "at": 0}).encode()
    async with egress(None, bucket).running() as proxies:
        assert not proxies.configured
        with pytest.raises(NotConfigured, match="CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR"):
            await proxies.open(SESSION, EgressPolicy())
        assert await proxies.restore() == 0
    assert SESSION in bucket.values
    assert "not configured in this deployment" in NOT_CONFIGURED


async def test_a_socket_dir_too_long_for_a_session_socket_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(CannotListen, match="is too long"):
        async with egress(tmp_path / ("d" * 70), MemoryBucket()).running():
            pass


def test_an_empty_socket_dir_setting_is_unset_and_a_relative_one_made_absolute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR", "")
    assert EgressSettings().socket_dir is None
    monkeypatch.setenv("CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR", "run/egress")
    assert EgressSettings().socket_dir == Path.cwd() / "run" / "egress"
