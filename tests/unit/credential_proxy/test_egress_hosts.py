"""A credential-proxy on one of several machines: its egress operations on its host's own subjects,
the grants it writes naming its host, and a restart serving only its own host's grants (the others'
sockets are on other machines)."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from corral.contracts.egress import EgressOps, EgressPolicy, egress_host_rpc, egress_rpc
from corral.contracts.mcp import McpOps
from corral.contracts.sandbox import SANDBOX_HOST_ID_PATTERN
from corral.credential_proxy.egress import Egress
from corral.credential_proxy.grants import Grants
from corral.credential_proxy.rpc import Service, operations
from corral.credential_proxy.settings import EgressSettings, Settings
from corral.sandbox_manager.settings import SandboxSettings
from corral.settings import HOST_ID_PATTERN, host_id_of, machine_host_id
from tests.unit.credential_proxy.test_proxy import FakeNet
from tests.unit.credential_proxy.test_sockets import MemoryBucket

SESSION, OTHER, OLD = (
    "sesn_01JD3ABCDEFGHJKMNPQRSTVWXY",
    "sesn_01JD3ABCDEFGHJKMNPQRSTVWXZ",
    "sesn_01JD3ABCDEFGHJKMNPQRSTVWX0",
)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A short directory (a unix socket's path has at most 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="corral-") as path:
        yield Path(path)


def service(host: str | None) -> Service:
    fake = SimpleNamespace(fetcher=SimpleNamespace(fetch=None), search=SimpleNamespace(search=None))
    return cast(Service, SimpleNamespace(**vars(fake), credentials=None, host=host))


def served(host: str | None) -> dict[str, str]:
    return {op.subject: op.queue for op in operations(service(host)).operations}


def test_with_a_host_id_the_egress_operations_are_served_on_the_hosts_subjects_too() -> None:
    subjects = served("node-1")
    for op in EgressOps.HOSTED:
        assert subjects[egress_rpc(op.name)] == "credential-proxy"
        assert subjects[egress_host_rpc("node-1", op.name)] == "credential-proxy.node-1"
    # what any credential-proxy answers alike stays on the queue group only
    assert McpOps.CALL.subject in subjects
    assert not [s for s in subjects if s.startswith("corral.rpc.mcp.host")]
    assert len(subjects) == len(served(None)) + len(EgressOps.HOSTED)


def test_without_a_host_id_only_the_queue_group_serves_egress() -> None:
    assert not [s for s in served(None) if ".host." in s]


def test_the_host_id_defaults_to_the_machines_name_and_any_name_becomes_one_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CORRAL_CREDENTIAL_PROXY_HOST_ID", raising=False)
    assert Settings().host_id == machine_host_id()
    monkeypatch.setenv("CORRAL_CREDENTIAL_PROXY_HOST_ID", "node-7")
    assert Settings().host_id == "node-7"
    # a Kubernetes node name, as spec.nodeName gives it: the sandbox-manager makes it the same id
    monkeypatch.setenv("CORRAL_CREDENTIAL_PROXY_HOST_ID", "ip-10-0-3-7.eu-west-1.compute.internal")
    monkeypatch.setenv("CORRAL_SANDBOX_HOST_ID", "ip-10-0-3-7.eu-west-1.compute.internal")
    monkeypatch.setenv("CORRAL_SANDBOX_EGRESS_HOST", "ip-10-0-3-7.eu-west-1.compute.internal")
    assert Settings().host_id == "ip-10-0-3-7-eu-west-1-compute-internal"
    assert SandboxSettings().host_id == SandboxSettings().egress_host == Settings().host_id
    monkeypatch.setenv("CORRAL_CREDENTIAL_PROXY_HOST_ID", "...")
    with pytest.raises(ValueError, match="not a host id"):
        Settings()


def test_a_long_name_keeps_a_digest_of_the_whole_so_two_stay_two() -> None:
    long = "n" * 70
    first, second = host_id_of(long + ".a"), host_id_of(long + ".b")
    assert first != second
    for token in (first, second, machine_host_id()):
        assert re.fullmatch(HOST_ID_PATTERN, token), token
    assert HOST_ID_PATTERN == SANDBOX_HOST_ID_PATTERN, "one host id, whichever service reads it"


def egress(socket_dir: Path, bucket: MemoryBucket, host: str | None) -> Egress:
    net = FakeNet()
    return Egress(
        EgressSettings(socket_dir=socket_dir),
        Grants(cast(Any, bucket), host=host),
        resolve=net.resolve,
        open_connection=net.open_connection,
        own_addresses=net.own_addresses,
    )


async def test_a_restart_serves_its_own_hosts_grants_and_those_naming_none_only(tmp_path: Path) -> None:
    bucket = MemoryBucket()
    async with egress(tmp_path / "a", bucket, "host-a").running() as on_a:
        await on_a.open(SESSION, EgressPolicy(allowed_hosts=[]))
    async with egress(tmp_path / "b", bucket, "host-b").running() as on_b:
        await on_b.open(OTHER, EgressPolicy(allowed_hosts=[]))
    bucket.values[OLD] = json.dumps({"session_id": OLD, "policy": {}, "at": 0}).encode()  # before hosts
    assert json.loads(bucket.values[SESSION])["host"] == "host-a"
    assert json.loads(bucket.values[OTHER])["host"] == "host-b"

    async with egress(tmp_path / "a", bucket, "host-a").running() as on_a:
        assert await on_a.restore() == 2
        assert (tmp_path / "a" / SESSION / "proxy.sock").exists() and (tmp_path / "a" / OLD / "proxy.sock").exists()
        assert not (tmp_path / "a" / OTHER).exists(), "host-b's socket is on host-b"
    assert OTHER in bucket.values, "the other host's grant is kept for its own credential-proxy"


async def test_a_session_opened_again_on_another_host_moves_its_grant_there(tmp_path: Path) -> None:
    bucket = MemoryBucket()
    async with egress(tmp_path / "a", bucket, "host-a").running() as on_a:
        await on_a.open(SESSION, EgressPolicy(allowed_hosts=[]))
    async with egress(tmp_path / "b", bucket, "host-b").running() as on_b:
        await on_b.open(SESSION, EgressPolicy(allowed_hosts=[]))
    async with egress(tmp_path / "a", bucket, "host-a").running() as on_a:
        assert await on_a.restore() == 0
    assert json.loads(bucket.values[SESSION])["host"] == "host-b"
