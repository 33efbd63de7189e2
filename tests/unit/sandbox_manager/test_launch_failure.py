"""A sandbox whose exec agent never answers is removed; when that removal fails too, it is logged
with the container and session (the reaper retries), never passed over in silence."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from docker.errors import DockerException

from corral.sandbox_manager.channel import SandboxLost
from corral.sandbox_manager.container_spec import ContainerSpec
from corral.sandbox_manager.sandboxes import Launcher

SPEC = ContainerSpec(
    image="corral-sandbox:test",
    user="1000:1000",
    memory="512m",
    nano_cpus=1_000_000_000,
    pids=256,
    workspace_size="1g",
    tmp_size="64m",
    workspace_inodes=100_000,
    tmp_inodes=10_000,
    network="none",
    output_limit=100_000,
    part_bytes=163_840,
    default_timeout_ms=120_000,
    max_timeout_ms=600_000,
)


class BrokenEngine:
    """Starts a container whose agent hangs up at once, and then cannot remove it."""

    scope = "test"

    def __init__(self) -> None:
        self.removals: list[str] = []

    def labels(self, spec: ContainerSpec, *, session_id: str | None, environment_id: str | None) -> dict[str, str]:
        return {}

    async def launch(
        self, spec: ContainerSpec, name: str, labels: dict[str, str], **_: Any
    ) -> tuple[str, socket.socket]:
        ours, agents = socket.socketpair()
        agents.close()
        return "c0ffee", ours

    async def remove(self, container_id: str) -> None:
        self.removals.append(container_id)
        raise DockerException("engine went away")


async def test_a_failed_removal_of_a_sandbox_that_never_answered_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    engine = BrokenEngine()
    launcher = Launcher(engine, start_timeout_s=2.0)  # type: ignore[arg-type]
    with pytest.raises((SandboxLost, TimeoutError)):
        await launcher.start(SPEC, session_id="sesn_1")
    assert engine.removals == ["c0ffee"]
    [record] = [r for r in caplog.records if "could not remove a sandbox" in r.getMessage()]
    assert record.fields["session_id"] == "sesn_1"  # type: ignore[attr-defined]
    assert record.fields["container"].startswith("corral-sbx-test-")  # type: ignore[attr-defined]
    assert record.exc_info is not None and "engine went away" in str(record.exc_info[1])
