"""Environments with ``packages``: their image is built from the sandbox image once, the packages work
in the sandbox, and a build that fails reaches the model as the tool call's error result.

Each image these tests build is removed first, so every run builds it (once: tens of seconds, with
``apt-get update``; the engine's layer cache may still serve steps an earlier run left), and it is
removed again at the end. The manager here trusts the CA
certificates this host trusts while it builds (``CORRAL_SANDBOX_ENVIRONMENT_CA_FILE``): where HTTPS
to the registries goes through a TLS-intercepting proxy, that is what lets pip reach them.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import pytest_asyncio

from corral.bus import Bus
from corral.contracts.sandbox import Execute, Provision, Provisioned, SandboxOp
from corral.harness.sandbox import BusSandbox, SandboxError
from corral.sandbox_manager.images import environment_image, read_trusted_ca
from corral.sandbox_manager.packages import read_packages
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


def host_ca_bundle() -> str:
    """The PEM bundle of the CA certificates this host trusts."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("this host has no CA bundle (apt-get install -y ca-certificates)", pytrace=False)


def tag_of(engine: Engine, config: dict[str, Any]) -> str:
    image = environment_image(engine.image, read_packages(config), read_trusted_ca(host_ca_bundle()))
    assert image is not None
    return image.tag


@pytest_asyncio.fixture(scope="module")
async def manager(nats_url: str, bus: Bus, engine: Engine) -> AsyncIterator[Manager]:
    """A manager whose environment builds trust this host's CA certificates."""
    box = sandbox_settings(engine, environment_ca_file=host_ca_bundle(), environment_builds="host-network")
    try:
        async with running_manager(nats_url, bus, engine, box) as running:
            yield running
    finally:
        remove_scope(engine, box.scope)


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
    fresh_images: None, manager: Manager, caplog: pytest.LogCaptureFixture, report: Callable[[str], None]
) -> None:
    caplog.set_level(logging.INFO, logger="corral.sandbox_manager")
    tag = tag_of(manager.engine, WITH_PACKAGES)
    began = time.monotonic()
    first = await provision(manager, session(), WITH_PACKAGES)
    built_in = time.monotonic() - began
    # A warm base-image container was ready, but an environment image spec never takes one.
    assert not first.from_pool and first.notices == []
    assert manager.engine.client.api.inspect_container(first.container_id)["Config"]["Image"] == tag
    image = manager.engine.client.api.inspect_image(tag)
    assert image["Config"]["Labels"]["corral.image"] == "environment"
    assert image["Config"]["User"] == "sandbox" and image["Config"]["WorkingDir"] == "/workspace"
    assert builds_logged(caplog, tag) == 1
    assert any(  # every line of the build is logged
        r.getMessage().startswith("environment image build: Step ") for r in caplog.records
    )

    sid = session()
    second = await provision(manager, sid, WITH_PACKAGES)
    assert manager.engine.client.api.inspect_container(second.container_id)["Config"]["Image"] == tag
    assert manager.engine.client.api.inspect_image(tag)["Id"] == image["Id"]
    assert builds_logged(caplog, tag) == 1, "the same packages on the same base are not built again"

    assert (await manager.bash(sid, "jq --version")).startswith("jq-1.")
    assert await manager.bash(sid, 'python3 -c "import six; print(six.__version__)"') == "1.16.0\n"
    assert await manager.bash(sid, "echo '{\"a\": [1, 2]}' | jq -c '.a'") == "[1,2]\n"
    assert await manager.bash(sid, "id -u; pwd") == "1000\n/workspace\n"
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


async def test_a_package_entry_that_is_not_a_name_is_refused_before_anything_is_built(manager: Manager) -> None:
    config = {"type": "cloud", "packages": {"apt": ["jq; rm -rf /"]}}
    with pytest.raises(SandboxError) as refused:
        await BusSandbox(manager.bus).provision(
            Provision(session_id=session(), environment_id="env_bad", environment_config=config)
        )
    assert refused.value.code == "invalid_packages"
    assert "the apt list is refused: 'jq; rm -rf /' is not a package name" in refused.value.message
