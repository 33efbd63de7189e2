"""A restarted credential-proxy serves again every session whose grant is on the bus, on a new socket in
the session's directory (the one a running sandbox has mounted).

This module has its own nats-server, so the grants in ``corral_egress`` are only its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from corral.bus import Bus
from corral.contracts.egress import EGRESS_SOCKET_NAME, EgressOpened, EgressPolicy
from corral.contracts.subjects import egress_spec
from corral.credential_proxy.settings import EgressSettings
from tests.integration.credential_proxy.conftest import OpenBaoServer, new_session, running, short_directory
from tests.integration.credential_proxy.test_egress_proxy import present, raw

pytestmark = pytest.mark.integration


def leave_a_stale_socket(path: Path) -> None:
    """What a credential-proxy killed without cleaning up leaves: a socket file nothing listens on."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


async def test_a_restart_serves_every_grant_again_on_a_new_socket_in_the_same_directory(
    bus: Bus, nats_url: str, socket_dir: Path, vault: OpenBaoServer
) -> None:
    session_id, legacy_id, broken_id = new_session(), new_session(), new_session()
    grants = await bus.ensure_key_value(egress_spec(EgressSettings().grant_ttl_s))
    async with running(bus, nats_url, socket_dir, vault) as proxy:
        reply = await proxy.open(session_id, EgressPolicy(allowed_hosts=["pypi.org"]))
        assert reply.ok, reply.error
        egress = EgressOpened.model_validate(reply.result)
        path = Path(egress.directory) / egress.socket_name
        # a grant written by the version that listened on TCP, and one that does not load
        legacy = {
            "session_id": legacy_id,
            "listen_host": "172.30.0.1",
            "port": 3128,
            "policy": {"allowed_hosts": [], "allow_package_managers": False},
            "at": time.time(),
        }
        await grants.put(legacy_id, json.dumps(legacy).encode())
        await grants.put(broken_id, b'{"session_id": "not json')

    assert stat.S_ISDIR(os.lstat(egress.directory).st_mode), "a stop keeps the directory a sandbox has mounted"
    assert not present(path), "a stop removes the socket"
    leave_a_stale_socket(path)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_unix_connection(path)

    async with running(bus, nats_url, socket_dir, vault) as proxy:
        assert (await proxy.health()).details["egress_listeners"] == "2"
        after = os.lstat(path)
        assert stat.S_ISSOCK(after.st_mode) and stat.S_IMODE(after.st_mode) == 0o666, "the socket is made again"
        assert os.listdir(egress.directory) == [EGRESS_SOCKET_NAME]
        status, text = await raw(path, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        assert status == 403 and "example.com" in text, "the restored proxy applies the granted policy"
        status, text = await raw(socket_dir / legacy_id / EGRESS_SOCKET_NAME, b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
        assert status == 403 and "pypi.org" in text, "a TCP-era grant is served on its socket, with its policy"
        assert await grants.get(broken_id) is None, "a grant that does not load is dropped"
        assert not (socket_dir / broken_id).exists()
        again = await proxy.open(session_id, EgressPolicy(allowed_hosts=["pypi.org"]))
        assert again.ok and EgressOpened.model_validate(again.result) == egress
        for closing in (session_id, legacy_id):
            closed = await proxy.close(closing)
            assert closed.ok and closed.result == {"closed": True}
            assert not (socket_dir / closing).exists()

    async with running(bus, nats_url, socket_dir, vault) as proxy:
        assert (await proxy.health()).details["egress_listeners"] == "0", "a closed session is not restored"
    assert os.listdir(socket_dir) == []


async def test_without_a_socket_dir_open_says_egress_is_not_configured_and_grants_are_kept(
    bus: Bus, nats_url: str, vault: OpenBaoServer
) -> None:
    grants = await bus.ensure_key_value(egress_spec(EgressSettings().grant_ttl_s))
    kept = new_session()
    grant = {"session_id": kept, "policy": {"allowed_hosts": None}, "at": time.time()}
    await grants.put(kept, json.dumps(grant).encode())
    async with running(bus, nats_url, None, vault) as proxy:
        reply = await proxy.open(new_session(), EgressPolicy(allowed_hosts=["pypi.org"]))
        assert not reply.ok and reply.error is not None
        assert reply.error.type == "invalid_request_error"
        assert reply.error.details == {"error_code": "egress_not_configured"}
        assert "egress is not configured in this deployment" in reply.error.message
        assert "CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR" in reply.error.message
        health = await proxy.health()
        assert health.details["egress"] == "not configured: set CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR"
        assert health.details["egress_listeners"] == "0"
    assert await grants.get(kept) is not None, "a deployment without egress does not forget the grants"
    with short_directory() as later:
        async with running(bus, nats_url, later, vault) as proxy:
            assert (later / kept / EGRESS_SOCKET_NAME).is_socket(), "set later, the grant is served"
            assert (await proxy.close(kept)).ok
