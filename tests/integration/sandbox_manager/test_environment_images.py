"""Environments with ``packages``: their image is built from the sandbox image once, in a build
container whose only way out is the build's egress proxy, the packages work in the sandbox, and a
build that fails reaches the model as the tool call's error result.

A credential-proxy runs in-process here (its egress component, sockets in a short temporary
directory), as it does beside the manager in a deployment: builds need it. Each image these tests
build is removed first, so every run builds it (once: a few seconds to tens of seconds, with
``apt-get update``), and it is removed again at the end. The manager here trusts the CA certificates
this host trusts while it builds (``CORRAL_SANDBOX_ENVIRONMENT_CA_FILE``): where HTTPS to the
registries goes through a TLS-intercepting proxy, that is what lets pip reach them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import pytest_asyncio

from corral.bus import Bus
from corral.contracts.egress import EgressPolicy
from corral.contracts.sandbox import Execute, Provision, Provisioned, SandboxOp
from corral.devstack.stack import host_ca_bundle
from corral.harness.sandbox import BusSandbox, SandboxError
from corral.sandbox_manager.builds import LABEL_BUILD_SCOPE, BuildError, BuildJob, BuildLimits
from corral.sandbox_manager.containers import Driver
from corral.sandbox_manager.egress import BusEgress, EgressMount
from corral.sandbox_manager.images import EnvironmentImages, environment_image, read_trusted_ca
from corral.sandbox_manager.packages import read_packages
from tests.integration.credential_proxy.conftest import running as running_credential_proxy
from tests.integration.credential_proxy.conftest import short_directory
from tests.integration.sandbox_manager.conftest import (
    Engine,
    Manager,
    remove_scope,
    running_manager,
    sandbox_settings,
)

pytestmark = pytest.mark.integration

WITH_PACKAGES: dict[str, Any] = {
    "type": "cloud",
    "networking": {"type": "limited", "allowed_hosts": []},
    "packages": {"type": "packages", "apt": ["jq"], "cargo": [], "pip": ["six==1.16.0"]},
}
MISSING_PACKAGE: dict[str, Any] = {
    "type": "cloud",
    "networking": {"type": "limited", "allowed_hosts": []},
    "packages": {"type": "packages", "apt": ["corral-no-such-package"]},
}
#: A build installs from the package mirrors; the slowest step here is apt's.
BUILD_WAIT_S = 600.0


def session() -> str:
    return f"sesn_{uuid.uuid4().hex}"


def ca_bundle() -> str:
    """The PEM bundle of the CA certificates this host trusts (the one the devstack passes on)."""
    bundle = host_ca_bundle()
    if bundle is None:
        pytest.fail("this host has no CA bundle (apt-get install -y ca-certificates)", pytrace=False)
    return bundle


def tag_of(engine: Engine, config: dict[str, Any]) -> str:
    image = environment_image(engine.image, read_packages(config), read_trusted_ca(ca_bundle()))
    assert image is not None
    return image.tag


def build_containers(engine: Engine, scope: str) -> list[str]:
    rows = engine.client.api.containers(all=True, filters={"label": f"{LABEL_BUILD_SCOPE}={scope}"})
    return [str(row["Id"]) for row in rows]


@pytest.fixture(scope="module")
def egress_dir() -> Iterator[Path]:
    """The credential-proxy's ``CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR`` (short: a socket path has at most
    107 bytes)."""
    with short_directory() as path:
        yield path / "egress"


@pytest_asyncio.fixture(scope="module")
async def manager(nats_url: str, bus: Bus, engine: Engine, egress_dir: Path) -> AsyncIterator[Manager]:
    """A manager whose environment builds trust this host's CA certificates, beside a credential-proxy
    that gives each build its egress proxy."""
    box = sandbox_settings(engine, environment_ca_file=ca_bundle())
    try:
        async with (
            running_credential_proxy(bus, nats_url, egress_dir),
            running_manager(nats_url, bus, engine, box) as running,
        ):
            yield running
    finally:
        remove_scope(engine, box.scope)
        for container_id in build_containers(engine, box.scope):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                engine.client.api.remove_container(container_id, force=True)


def remove_image(engine: Engine, tag: str) -> None:
    with contextlib.suppress(docker.errors.ImageNotFound):
        engine.client.api.remove_image(tag, force=True)


@pytest.fixture(scope="module")
def fresh_images(engine: Engine) -> Iterator[None]:
    tags = [tag_of(engine, config) for config in (WITH_PACKAGES, MISSING_PACKAGE)]
    for tag in tags:
        remove_image(engine, tag)
    yield
    for tag in tags:
        remove_image(engine, tag)


async def provision(manager: Manager, session_id: str, config: dict[str, Any]) -> Provisioned:
    body = Provision(session_id=session_id, environment_id="env_packages", environment_config=config)
    reply = await manager.rpc(SandboxOp.PROVISION, body.model_dump(), timeout=BUILD_WAIT_S)
    assert reply.ok, reply.error
    return Provisioned.model_validate(reply.result)


def builds_logged(caplog: pytest.LogCaptureFixture, tag: str) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name == "corral.sandbox_manager.images"
        and r.getMessage() == "building an environment image"
        and getattr(r, "fields", {}).get("tag") == tag
    )


@pytest.mark.timeout(BUILD_WAIT_S + 120)
async def test_an_environment_with_packages_has_them_in_its_sandbox_and_its_image_is_built_once(
    fresh_images: None,
    manager: Manager,
    egress_dir: Path,
    caplog: pytest.LogCaptureFixture,
    report: Callable[[str], None],
) -> None:
    caplog.set_level(logging.INFO, logger="corral.sandbox_manager")
    api = manager.engine.client.api
    tag = tag_of(manager.engine, WITH_PACKAGES)
    began = time.monotonic()
    first = await provision(manager, session(), WITH_PACKAGES)
    built_in = time.monotonic() - began
    # A warm base-image container was ready, but an environment image spec never takes one.
    assert not first.from_pool and first.notices == []
    assert api.inspect_container(first.container_id)["Config"]["Image"] == tag
    image = api.inspect_image(tag)
    base = api.inspect_image(manager.engine.image)
    config = image["Config"]
    assert config["Labels"]["corral.image"] == "environment"
    assert config["User"] == "sandbox" and config["WorkingDir"] == "/workspace"
    # the base's environment and command, and nothing of the build container's (proxy variables, command)
    assert config["Env"] == base["Config"]["Env"] and config["Cmd"] == base["Config"]["Cmd"]
    assert config["Labels"]["corral.build.scope"] == "" and config["Labels"]["corral.build.id"] == ""
    assert builds_logged(caplog, tag) == 1
    assert any(  # every line of the build is logged, each step announced
        r.getMessage() == "environment image build: corral-build: step 2/3: installing the apt packages (jq)"
        for r in caplog.records
    )
    # the build container is gone, and so is the build's egress proxy
    assert build_containers(manager.engine, manager.scope) == []
    assert not any(name.startswith("build-") for name in os.listdir(egress_dir))

    sid = session()
    second = await provision(manager, sid, WITH_PACKAGES)
    assert api.inspect_container(second.container_id)["Config"]["Image"] == tag
    assert api.inspect_image(tag)["Id"] == image["Id"]
    assert builds_logged(caplog, tag) == 1, "the same packages on the same base are not built again"

    assert (await manager.bash(sid, "jq --version")).startswith("jq-1.")
    assert await manager.bash(sid, 'python3 -c "import six; print(six.__version__)"') == "1.16.0\n"
    assert await manager.bash(sid, "echo '{\"a\": [1, 2]}' | jq -c '.a'") == "[1,2]\n"
    assert await manager.bash(sid, "id -u; pwd") == "1000\n/workspace\n"
    assert await manager.bash(sid, "env | grep -ci proxy || true") == "0\n"
    report(f"environment image {tag} (apt jq, pip six) built and provisioned in {built_in:.1f} s")


@pytest.mark.timeout(BUILD_WAIT_S + 120)
async def test_packages_that_cannot_be_installed_are_the_tool_calls_error_result_and_are_not_rebuilt_at_once(
    fresh_images: None, manager: Manager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="corral.sandbox_manager")
    tag = tag_of(manager.engine, MISSING_PACKAGE)
    harness_side = BusSandbox(manager.bus)

    def call(session_id: str) -> Execute:
        return Execute(
            session_id=session_id,
            tool_use_id=f"toolu_{uuid.uuid4().hex}",
            name="bash",
            input={"command": "echo never runs"},
            environment_id="env_missing",
            environment_config=MISSING_PACKAGE,
        )

    with pytest.raises(SandboxError) as failed:
        await harness_side.execute(call(session()), timeout_s=BUILD_WAIT_S)
    message = failed.value.message  # what the harness puts in the tool call's error result
    assert failed.value.code == "packages_not_installed"
    assert message.startswith(
        "The sandbox could not run the tool: this environment's packages could not be installed, so no "
        "sandbox was started: installing the apt packages (corral-no-such-package) failed with exit code 100."
    )
    assert "Unable to locate package corral-no-such-package" in message
    assert builds_logged(caplog, tag) == 1

    began = time.monotonic()
    with pytest.raises(SandboxError) as again:
        await harness_side.execute(call(session()), timeout_s=30)
    assert time.monotonic() - began < 5
    assert "failed with exit code 100" in again.value.message and "s ago" in again.value.message
    assert builds_logged(caplog, tag) == 1, "a failed build is remembered, not retried by every call"
    with pytest.raises(docker.errors.ImageNotFound):
        manager.engine.client.api.inspect_image(tag)
    assert build_containers(manager.engine, manager.scope) == []


async def test_a_package_entry_that_is_not_a_name_is_refused_before_anything_is_built(manager: Manager) -> None:
    config = {"type": "cloud", "packages": {"apt": ["jq; rm -rf /"]}}
    with pytest.raises(SandboxError) as refused:
        await BusSandbox(manager.bus).provision(
            Provision(session_id=session(), environment_id="env_bad", environment_config=config)
        )
    assert refused.value.code == "invalid_packages"
    assert "the apt list is refused: 'jq; rm -rf /' is not a package name" in refused.value.message


# --- the build container itself -------------------------------------------------------------------------
#: Run as an install step would be: what it can reach of this host's loopback services, directly and
#: through the build's proxy, and which network interfaces it has.
REACH = r"""
nats_port = {nats_port}
import json, os, socket, urllib.error, urllib.request
out = {{"interfaces": sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:])}}
try:
    socket.create_connection(("127.0.0.1", nats_port), timeout=3).close()
    out["direct"] = "connected"
except OSError as exc:
    out["direct"] = type(exc).__name__
out["proxied"] = {{}}
for url in (f"http://127.0.0.1:{{nats_port}}/", "http://127.0.0.1/", "http://localhost/"):
    try:
        urllib.request.urlopen(url, timeout=10)
        out["proxied"][url] = "connected"
    except urllib.error.HTTPError as exc:
        out["proxied"][url] = [exc.code, exc.read(300).decode()]
    except OSError as exc:
        out["proxied"][url] = repr(exc)
out["proxy"] = os.environ.get("http_proxy")
out["uid"] = os.getuid()
print("REACH " + json.dumps(out))
"""


@pytest_asyncio.fixture
async def build_driver(manager: Manager) -> AsyncIterator[Driver]:
    driver = Driver(manager.engine.host, manager.scope)
    try:
        yield driver
    finally:
        await driver.aclose()


def probe_job(manager: Manager, mount_dir: str, build_id: str, script: str) -> BuildJob:
    return BuildJob(
        build_id=build_id,
        name=f"corral-build-{manager.scope}-{build_id.removeprefix('build-')}",
        scope=manager.scope,
        base=manager.engine.image,
        tag=f"corral-env-probe:{build_id.removeprefix('build-')}",
        script=script,
        egress=EgressMount(host_directory=mount_dir),
        limits=BuildLimits(memory="512m", nano_cpus=1_000_000_000, pids=256),
        image_labels={},
    )


async def test_an_install_step_reaches_none_of_the_hosts_loopback_services(
    manager: Manager, build_driver: Driver, nats_url: str
) -> None:
    nats_port = int(nats_url.rsplit(":", 1)[1])
    build_id = f"build-{uuid.uuid4().hex[:12]}"
    mount = await BusEgress(manager.bus).open(build_id, EgressPolicy(allowed_hosts=[], allow_package_managers=True))
    try:
        # without NO_PROXY, so even a loopback URL goes to the proxy (instead of the container's own loopback)
        script = f"env -u no_proxy -u NO_PROXY python3 - <<'PY'\n{REACH.format(nats_port=nats_port)}\nPY\nexit 3"
        lines: list[str] = []
        with pytest.raises(BuildError) as stopped:  # exit 3: nothing is committed
            await build_driver.run_build(
                probe_job(manager, mount.host_directory, build_id, script), timeout_s=60, on_line=lines.append
            )
    finally:
        await BusEgress(manager.bus).close(build_id)
    assert stopped.value.exit_code == 3, lines
    [line] = [line for line in lines if line.startswith("REACH ")]
    seen = json.loads(line.removeprefix("REACH "))
    assert seen["uid"] == 0 and seen["interfaces"] == ["lo"]
    assert seen["direct"] == "ConnectionRefusedError"  # its loopback is its own: nothing listens there
    assert seen["proxy"] == "http://127.0.0.1:3128"
    # the build's proxy serves the package registries only (and never the host's own addresses, or
    # ports besides 80 and 443, whatever a policy says)
    proxied = seen["proxied"]
    assert all(answer[0] == 403 for answer in proxied.values()), proxied
    assert "ports 80, 443 only" in proxied[f"http://127.0.0.1:{nats_port}/"][1]
    assert "not in this session's allowed hosts" in proxied["http://localhost/"][1]
    assert build_containers(manager.engine, manager.scope) == []


async def test_a_build_that_is_stopped_leaves_no_container_behind(manager: Manager, build_driver: Driver) -> None:
    build_id = f"build-{uuid.uuid4().hex[:12]}"
    with short_directory() as empty:  # no proxy needed: the script only waits
        job = probe_job(manager, str(empty), build_id, "echo started; sleep 120")
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        def see(line: str) -> None:  # called from the build's thread
            if line == "started":
                loop.call_soon_threadsafe(started.set)

        running = asyncio.ensure_future(build_driver.run_build(job, timeout_s=60, on_line=see))
        async with asyncio.timeout(30):
            await started.wait()
        assert len(build_containers(manager.engine, manager.scope)) == 1
        running.cancel()
        async with asyncio.timeout(40):
            with pytest.raises(asyncio.CancelledError):
                await running
    assert build_containers(manager.engine, manager.scope) == []


@pytest.mark.timeout(BUILD_WAIT_S + 120)
async def test_a_build_container_a_previous_run_left_is_swept_and_a_sandbox_never_is(
    fresh_images: None, manager: Manager, build_driver: Driver
) -> None:
    api = manager.engine.client.api
    sandbox = await provision(manager, session(), WITH_PACKAGES)  # from an environment image
    leftover = api.create_container(
        manager.engine.image,
        command=["sleep", "300"],
        name=f"corral-build-{manager.scope}-{uuid.uuid4().hex[:12]}",
        labels={LABEL_BUILD_SCOPE: manager.scope, "corral.build.id": f"build-{uuid.uuid4().hex[:12]}"},
        host_config=api.create_host_config(network_mode="none"),
    )["Id"]
    api.start(leftover)
    # the environment image's blanked build labels are all a sandbox from it carries
    assert api.inspect_container(sandbox.container_id)["Config"]["Labels"][LABEL_BUILD_SCOPE] == ""
    assert build_containers(manager.engine, manager.scope) == [leftover]

    images = EnvironmentImages(
        build_driver,
        BusEgress(manager.bus),
        limits=BuildLimits(memory="512m", nano_cpus=1_000_000_000, pids=256),
        timeout_s=60,
        failure_memory_s=0,
    )
    assert await images.sweep() == 1
    assert build_containers(manager.engine, manager.scope) == []
    assert api.inspect_container(sandbox.container_id)["State"]["Running"]
