"""The sandbox-manager against a real Docker engine, a real sandbox image and a real nats-server.

``CORRAL_DOCKER_HOST`` and ``CORRAL_SANDBOX_IMAGE`` name an engine and image to use; without them the
tests start their own engine through the devstack and build (or find) the image. If that cannot
be done the tests fail; they are never skipped. Each test module runs its own nats-server and its
own manager, in-process on the test loop, with a unique ``CORRAL_SANDBOX_SCOPE`` label, and
removes every container of that scope when it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import pytest_asyncio

from corral.bus import Bus, NoResponders
from corral.contracts.health import Health
from corral.contracts.rpc import RpcReply
from corral.contracts.sandbox import (
    Provision,
    Provisioned,
    SandboxOp,
    ToolOutcome,
    execute_reply_timeout_s,
    sandbox_rpc,
)
from corral.contracts.subjects import health
from corral.devstack.ports import Ports
from corral.devstack.stack import Stack
from corral.runner import serve
from corral.sandbox_manager import composition
from corral.sandbox_manager.container_spec import LABEL_SCOPE
from corral.sandbox_manager.settings import SandboxSettings, Settings
from corral.settings import NatsSettings
from tests.waiting import eventually as eventually

pytestmark = pytest.mark.integration

#: Where the engine these tests start keeps its images (the sandbox image is built once per machine).
DOCKER_DATA_ROOT = "/var/tmp/corral-e2e-docker"


@dataclass(frozen=True)
class Engine:
    host: str
    image: str
    client: docker.DockerClient


#: The environment these tests' sessions use unless they say otherwise: no network access at all (no
#: credential-proxy runs here to give a sandbox its egress proxy).
ISOLATED: dict[str, Any] = {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": []}}


def _own_engine(state_dir: Path) -> Stack:
    """A Docker engine (and the NATS/Postgres/OpenBao beside it) with the sandbox image built."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    environ["CORRAL_DOCKER_DATA_ROOT"] = os.environ.get("CORRAL_DOCKER_DATA_ROOT") or DOCKER_DATA_ROOT
    stack = Stack(state_dir, Ports.free(), services=False, docker=True, environ=environ)
    stack.start(timeout=900)
    return stack


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """``CORRAL_DOCKER_HOST`` + ``CORRAL_SANDBOX_IMAGE`` when both are set, else an engine of our own."""
    host = os.environ.get("CORRAL_DOCKER_HOST")
    image = os.environ.get("CORRAL_SANDBOX_IMAGE")
    own: Stack | None = None
    if not host or not image:
        own = _own_engine(tmp_path_factory.mktemp("sandbox-engine"))
        host, image = own.docker_host, own.sandbox_image
        assert host and image, "the devstack started no Docker engine or built no sandbox image"
    client = docker.DockerClient(base_url=host, timeout=60)
    try:
        client.version()
    except Exception as exc:
        pytest.fail(f"no Docker engine answers at CORRAL_DOCKER_HOST={host}: {exc}", pytrace=False)
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.fail(f"CORRAL_SANDBOX_IMAGE={image} is not on the engine at {host}; build it first", pytrace=False)
    try:
        yield Engine(host=host, image=image, client=client)
    finally:
        client.close()
        if own is not None:
            own.stop()


@pytest_asyncio.fixture(scope="module")
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with Bus.connect(NatsSettings(url=nats_url), name="sandbox-tests") as b:
        yield b


def sandbox_settings(engine: Engine, **overrides: Any) -> SandboxSettings:
    values: dict[str, Any] = {
        "image": engine.image,
        "scope": f"test-{uuid.uuid4().hex[:10]}",
        "pool_size": 2,
        "memory": "512m",
        "pids": 128,
        "workspace_size": "64m",
        "tmp_size": "16m",
        "workspace_inodes": 20_000,
        "tmp_inodes": 4_000,
    }
    values.update(overrides)
    return SandboxSettings(**values)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Print a line of figures in the test report (shown without ``-s``)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line(line)

    return write


def containers_of(engine: Engine, scope: str | None = None) -> dict[str, dict[str, str]]:
    """Container id -> labels, in one engine call (``containers.list`` inspects each container after
    listing, which races with removals)."""
    filters = {"label": f"{LABEL_SCOPE}={scope}"} if scope else {}
    rows = engine.client.api.containers(all=True, filters=filters)
    return {str(row["Id"]): dict(row.get("Labels") or {}) for row in rows}


@dataclass
class Manager:
    """A running sandbox-manager and a client for it."""

    bus: Bus
    settings: Settings
    engine: Engine
    stop: asyncio.Event
    task: asyncio.Task[None] | None  # None: the manager runs in another process

    @property
    def scope(self) -> str:
        return self.settings.sandbox.scope

    async def rpc(self, op: str, body: dict[str, Any], *, timeout: float = 60.0) -> RpcReply:
        data = await self.bus.request(sandbox_rpc(op), json.dumps(body).encode(), timeout=timeout)
        return RpcReply.model_validate_json(data)

    async def provision(self, session_id: str, config: dict[str, Any] | None = None) -> Provisioned:
        reply = await self.rpc(
            SandboxOp.PROVISION,
            Provision(
                session_id=session_id,
                environment_id="env_test",
                environment_config=ISOLATED if config is None else config,
            ).model_dump(),
        )
        assert reply.ok, reply.error
        return Provisioned.model_validate(reply.result)

    async def execute(
        self,
        session_id: str,
        name: str,
        args: dict[str, Any],
        *,
        tool_use_id: str | None = None,
        timeout_ms: int | None = None,
    ) -> ToolOutcome:
        body = {
            "session_id": session_id,
            "tool_use_id": tool_use_id or f"toolu_{uuid.uuid4().hex}",
            "name": name,
            "input": args,
            "environment_id": "env_test",
            "environment_config": ISOLATED,
            "timeout_ms": timeout_ms,
        }
        wait = execute_reply_timeout_s(timeout_ms or args.get("timeout_ms"))
        reply = await self.rpc(SandboxOp.EXECUTE, body, timeout=wait)
        assert reply.ok, reply.error
        return ToolOutcome.model_validate(reply.result)

    async def bash(self, session_id: str, command: str, **kw: Any) -> str:
        outcome = await self.execute(session_id, "bash", {"command": command}, **kw)
        assert not outcome.is_error, outcome.content
        return outcome.content[-1].text

    async def health(self) -> Health:
        return Health.model_validate_json(await self.bus.request(health("sandbox-manager"), b"{}"))

    async def wait_pool_full(self, timeout: float = 30.0) -> None:
        size = self.settings.sandbox.pool_size
        async with asyncio.timeout(timeout):
            while True:
                pools = (await self.health()).details.get("pools", "")
                if pools != "none" and all(p.endswith(f":{size}/{size}") for p in pools.split(",")):
                    return
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_manager(
    nats_url: str, bus: Bus, engine: Engine, box: SandboxSettings, *, docker_host: str | None = None
) -> AsyncIterator[Manager]:
    """Run a manager on the test loop; waits until it has reconciled and started its pool, unless
    ``docker_host`` names another engine (then it only waits until it serves requests)."""
    settings = Settings(
        docker_host=docker_host or engine.host, sandbox=box, nats=NatsSettings(url=nats_url), engine_retry_s=0.2
    )
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        serve("sandbox-manager", composition.serve, settings, stop, ready=ready)
    )
    try:
        manager = Manager(bus=bus, settings=settings, engine=engine, stop=stop, task=task)
        async with asyncio.timeout(60):
            if docker_host is None:
                waiter = asyncio.ensure_future(ready.wait())
                await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    task.result()
            else:
                while True:
                    with contextlib.suppress(NoResponders):
                        await manager.health()
                        break
                    await asyncio.sleep(0.05)
        yield manager
    finally:
        stop.set()
        async with asyncio.timeout(60):
            await asyncio.gather(task, return_exceptions=True)


def remove_scope(engine: Engine, scope: str) -> None:
    for container_id in containers_of(engine, scope):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            engine.client.api.remove_container(container_id, force=True)


@pytest_asyncio.fixture(scope="module")
async def manager(nats_url: str, bus: Bus, engine: Engine) -> AsyncIterator[Manager]:
    box = sandbox_settings(engine)
    try:
        async with running_manager(nats_url, bus, engine, box) as running:
            yield running
    finally:
        remove_scope(engine, box.scope)
