"""The credential-proxy's egress proxies against a real nats-server (JetStream), in-process on the test loop.

Each test module runs its own nats-server and its own OpenBao on free ports with a private state
directory (initialised, unsealed, the ``corral/`` mount, the credential-proxy's policy and AppRole and
the audit device, as ``make up`` makes them); each ``CredentialProxy`` runs ``corral.credential_proxy``'s
composition root (through ``corral.runner.serve``) until stopped, with its egress sockets under a
temporary ``CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR`` and the AppRole login ``make up`` would give it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr

from corral.bus import Bus
from corral.contracts.egress import EgressOp, EgressPolicy, egress_rpc
from corral.contracts.health import Health
from corral.contracts.rpc import RpcReply
from corral.contracts.subjects import health
from corral.credential_proxy import composition
from corral.credential_proxy.settings import EgressSettings, OpenBaoSettings, Settings
from corral.devstack.openbao import AppRoleLogin, OpenBao
from corral.devstack.ports import Ports
from corral.devstack.state import StateDir
from corral.runner import serve
from corral.settings import NatsSettings
from tests.egress_network import stand_in_addresses

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class OpenBaoServer:
    """A running OpenBao and the credential-proxy's AppRole login for it."""

    server: OpenBao
    login: AppRoleLogin

    def settings(self, **changes: Any) -> OpenBaoSettings:
        """What ``make up`` tells the credential-proxy (with ``changes``)."""
        fields = {
            "addr": self.server.addr,
            "role_id": self.login.role_id,
            "secret_id": SecretStr(self.login.secret_id),
            **changes,
        }
        return OpenBaoSettings(**fields)


@contextlib.contextmanager
def openbao_server(state_dir: Path, **options: int) -> Iterator[OpenBaoServer]:
    """An OpenBao as ``make up`` starts it, on free ports with ``state_dir`` as its state directory."""
    ports = Ports.free()
    server = OpenBao(StateDir.at(state_dir), ports.bao, ports.bao_cluster, **options)
    server.launch()
    try:
        server.wait_ready(time.monotonic() + 60)
        yield OpenBaoServer(server=server, login=server.credential_proxy_login())
    finally:
        server.stop()


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    with openbao_server(Path(tmp_path_factory.mktemp("openbao"))) as server:
        yield server


@pytest_asyncio.fixture(scope="module")
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with Bus.connect(NatsSettings(url=nats_url), name="credential-proxy-tests") as b:
        yield b


def new_session() -> str:
    return f"sesn_{uuid.uuid4().hex[:16]}"


@dataclass
class CredentialProxy:
    """A credential-proxy run in-process; ``start``/``stop`` may be repeated (a restart)."""

    bus: Bus
    settings: Settings
    task: asyncio.Task[None] | None = None
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self.stop_event = asyncio.Event()
        ready = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(
            serve("credential-proxy", composition.serve, self.settings, self.stop_event, ready=ready)
        )
        waiter = asyncio.ensure_future(ready.wait())
        async with asyncio.timeout(30):
            await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            waiter.cancel()
            self.task.result()

    async def stop(self) -> None:
        if self.task is None:
            return
        self.stop_event.set()
        async with asyncio.timeout(30):
            await self.task
        self.task = None

    async def rpc(self, op: str, body: dict[str, Any]) -> RpcReply:
        return RpcReply.model_validate_json(await self.bus.request(egress_rpc(op), json.dumps(body).encode()))

    async def open(self, session_id: str, policy: EgressPolicy) -> RpcReply:
        return await self.rpc(EgressOp.OPEN, {"session_id": session_id, "policy": policy.model_dump(mode="json")})

    async def close(self, session_id: str) -> RpcReply:
        return await self.rpc(EgressOp.CLOSE, {"session_id": session_id})

    async def health(self) -> Health:
        return Health.model_validate_json(await self.bus.request(health("credential-proxy"), b"{}"))


@contextlib.asynccontextmanager
async def running(
    bus: Bus,
    nats_url: str,
    socket_dir: Path | None,
    vault: OpenBaoServer | None = None,
    *,
    openbao: OpenBaoSettings | None = None,
    **egress: Any,
) -> AsyncIterator[CredentialProxy]:
    """A credential-proxy serving egress under ``socket_dir`` (``None``: egress not configured) with
    ``vault`` (its own AppRole login unless ``openbao`` says otherwise; ``None``: no vault, for tests of
    egress alone from other services' suites, where health says the vault is unreachable), allowing
    this network's stand-ins for the outside hosts (``tests.egress_network``) unless told otherwise."""
    defaults = {"socket_dir": socket_dir, "connect_timeout_s": 15.0, "allow_addresses": stand_in_addresses()}
    if openbao is None:
        openbao = vault.settings() if vault is not None else OpenBaoSettings(addr="http://127.0.0.1:9")
    settings = Settings(
        openbao=openbao,
        health_probe_timeout_s=2.0,
        nats=NatsSettings(url=nats_url),
        egress=EgressSettings(**{**defaults, **egress}),
    )
    proxy = CredentialProxy(bus=bus, settings=settings)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@contextlib.contextmanager
def short_directory() -> Iterator[Path]:
    """A temporary directory with a short path: a unix socket's path has at most 107 bytes, which
    pytest's own temporary directories plus a session id can exceed."""
    with tempfile.TemporaryDirectory(prefix="corral-") as path:
        yield Path(path)


@pytest.fixture(scope="module")
def socket_dir() -> Iterator[Path]:
    """A ``CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR`` the credential-proxy makes itself (it does not exist yet)."""
    with short_directory() as path:
        yield path / "egress"


@pytest_asyncio.fixture(scope="module")
async def credential_proxy(
    bus: Bus, nats_url: str, socket_dir: Path, vault: OpenBaoServer
) -> AsyncIterator[CredentialProxy]:
    async with running(bus, nats_url, socket_dir, vault) as proxy:
        yield proxy
