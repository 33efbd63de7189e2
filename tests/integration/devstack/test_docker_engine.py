"""corral.devstack runs a private Docker engine, builds the sandbox image into it, and stops it.

Real ``dockerd`` (Debian's docker.io) and ``debootstrap``; nothing is skipped: without them, or
without root, the stack fails with the launcher's message (``apt-get install -y docker.io``).

Every engine here uses one data root, ``DATA_ROOT``, so the sandbox image (about a minute of
debootstrap) is built once per machine and found in that cache afterwards. It is a path of its own
(not ``$CORRAL_DOCKER_DATA_ROOT``), so these tests never share an engine with another stack that
happens to run meanwhile. The other components run on free ports in each test's temporary state
dir; every process a test starts is stopped by pid in the fixture's teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from corral.devstack import ComponentDiedError, Ports, Stack
from corral.devstack.docker_engine import DockerEngine
from corral.devstack.services import service_environment

DATA_ROOT = Path("/var/tmp/corral-test-docker")
# the first build on a machine runs debootstrap (about a minute on 2 cores)
START_TIMEOUT = 60.0
pytestmark = pytest.mark.timeout(600)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_dead(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if _pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _pid_alive(p)]
    return alive


def _running_pids(stack: Stack) -> dict[str, int]:
    return {s.name: s.pid for s in stack.status() if s.pid is not None}


def _containerd_pid(engine: DockerEngine) -> int | None:
    try:
        return int((engine.exec_root / "containerd" / "containerd.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


@pytest.fixture
def make_stack() -> Iterator[list[Stack]]:
    """Stacks with a Docker engine; whatever they started is stopped (by pid) afterwards."""
    stacks: list[Stack] = []
    seen: set[int] = set()
    yield stacks
    for stack in reversed(stacks):  # borrowers before the stack that owns a shared engine
        seen.update(_running_pids(stack).values())
        engine = stack.docker_engine
        if isinstance(engine, DockerEngine) and engine.owned():
            containerd = _containerd_pid(engine)
            if containerd is not None:
                seen.add(containerd)
        stack.stop()
    leftovers = _wait_dead(sorted(seen), timeout=30)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes survived stop(): {leftovers}"


def _stack(make_stack: list[Stack], state_dir: Path, *, lines: list[str] | None = None, **environ: str) -> Stack:
    stack = Stack(
        state_dir,
        Ports.free(),
        services=False,
        docker=True,
        environ={"CORRAL_DOCKER_DATA_ROOT": str(DATA_ROOT), **environ},
        progress=(lines.append if lines is not None else None),
    )
    make_stack.append(stack)
    return stack


def _client(stack: Stack) -> contextlib.closing[docker.DockerClient]:
    host = stack.docker_host
    assert host is not None
    return contextlib.closing(docker.DockerClient(base_url=host, timeout=60))


def test_the_engine_comes_up_on_its_own_socket_and_the_image_is_built_or_cached(
    make_stack: list[Stack], tmp_path: Path
) -> None:
    lines: list[str] = []
    stack = _stack(make_stack, tmp_path / "state", lines=lines)

    stack.start(timeout=START_TIMEOUT)

    engine = stack.docker_engine
    assert isinstance(engine, DockerEngine)
    running = _running_pids(stack)
    assert set(running) == {"nats", "postgres", "openbao", "docker"}
    assert engine.owned()
    assert stack.docker_host == f"unix://{engine.socket}"
    assert len(str(engine.socket)) < 100
    assert engine.socket.is_socket()
    assert engine.data_root == DATA_ROOT
    cmdline = Path(f"/proc/{running['docker']}/cmdline").read_bytes().split(b"\0")
    assert f"--data-root={DATA_ROOT}".encode() in cmdline
    assert b"--bridge=none" in cmdline
    with _client(stack) as client:
        assert client.ping() is True
        assert client.info()["DockerRootDir"] == str(DATA_ROOT)
        tag = stack.sandbox_image
        assert tag is not None
        assert tag.startswith("corral-sandbox:")
        assert len(tag.split(":", 1)[1]) == 12
        assert tag in client.images.get(tag).tags
    assert any(line.startswith("docker") and "ready in" in line for line in lines), lines
    assert any(line.startswith("sandbox-image") and tag in line for line in lines), lines
    # the sandbox-manager is told which engine and which image
    ctx_env = service_environment("sandbox-manager", stack.service_context(), base={})
    assert ctx_env["CORRAL_DOCKER_HOST"] == stack.docker_host
    assert ctx_env["CORRAL_SANDBOX_IMAGE"] == tag


def test_a_sandbox_container_runs_as_uid_1000_in_the_workspace_without_network(
    make_stack: list[Stack], tmp_path: Path
) -> None:
    stack = _stack(make_stack, tmp_path / "state")
    stack.start(timeout=START_TIMEOUT)
    tag = stack.sandbox_image
    assert tag is not None

    with _client(stack) as client:

        def run(*command: str) -> str:
            output = client.containers.run(tag, list(command), network_mode="none", remove=True)
            assert isinstance(output, bytes)
            return output.decode()

        assert run("id", "-u") == "1000\n"
        assert run("python3", "-c", "print(1)") == "1\n"
        assert run("sh", "-c", "pwd; stat -c %U /workspace; echo $HOME") == "/workspace\nsandbox\n/home/sandbox\n"
        assert run("ls", "/sys/class/net") == "lo\n"
        tools = run("sh", "-c", "for t in bash git ps grep find python3; do command -v $t; done")
        assert len(tools.split()) == 6, tools


def test_a_second_start_finds_the_image_in_the_cache_without_rebuilding(
    make_stack: list[Stack], tmp_path: Path
) -> None:
    first = _stack(make_stack, tmp_path / "first")
    first.start(timeout=START_TIMEOUT)
    with _client(first) as client:
        image_id = client.images.get(first.sandbox_image).id
    first.stop()

    lines: list[str] = []
    second = _stack(make_stack, tmp_path / "second", lines=lines)
    began = time.monotonic()
    second.start(timeout=START_TIMEOUT)
    took = time.monotonic() - began

    assert second.sandbox_image == first.sandbox_image
    image_lines = [line for line in lines if line.startswith("sandbox-image")]
    assert image_lines == [f"{'sandbox-image':<17} {'cached':<16} {second.sandbox_image}"], lines
    assert not any("debootstrap" in line or "docker build" in line for line in lines), lines
    assert took < 20, f"a cached start took {took:.1f}s"
    with _client(second) as client:
        assert client.images.get(second.sandbox_image).id == image_id


def test_stopping_the_stack_stops_dockerd_and_its_containers_and_keeps_the_data_root(
    make_stack: list[Stack], tmp_path: Path
) -> None:
    stack = _stack(make_stack, tmp_path / "state")
    stack.start(timeout=START_TIMEOUT)
    engine = stack.docker_engine
    assert isinstance(engine, DockerEngine)
    dockerd = stack.pid("docker")
    containerd = _containerd_pid(engine)
    assert dockerd is not None
    assert containerd is not None
    with _client(stack) as client:
        image_id = client.images.get(stack.sandbox_image).id
        sleeper = client.containers.run(
            stack.sandbox_image,
            ["sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait"],
            network_mode="none",
            detach=True,
            auto_remove=True,
        )
        sleeper.reload()
        sleeper_pid = int(sleeper.attrs["State"]["Pid"])
    assert _pid_alive(sleeper_pid)
    before = {p.name for p in DATA_ROOT.iterdir()}

    stack.stop()

    assert _wait_dead([dockerd, containerd, sleeper_pid], timeout=1) == []
    assert stack.pid("docker") is None
    assert not engine.pid_file.exists()
    assert {p.name for p in DATA_ROOT.iterdir()} >= before
    stack.start(timeout=START_TIMEOUT)
    with _client(stack) as client:
        assert client.images.get(stack.sandbox_image).id == image_id
        assert sleeper.id not in {c.id for c in client.containers.list(all=True)}


def test_a_killed_engine_is_reported_and_restarted_by_start(make_stack: list[Stack], tmp_path: Path) -> None:
    stack = _stack(make_stack, tmp_path / "state")
    stack.start(timeout=START_TIMEOUT)
    others = {name: pid for name, pid in _running_pids(stack).items() if name != "docker"}
    killed = stack.kill("docker", signal.SIGKILL)

    with pytest.raises(ComponentDiedError) as died:
        stack.wait_healthy(timeout=5)

    assert died.value.component == "docker"
    stack.start(timeout=START_TIMEOUT)
    restarted = _running_pids(stack)
    assert restarted["docker"] != killed
    assert {name: restarted[name] for name in others} == others
    with _client(stack) as client:
        assert client.ping() is True


def test_a_second_stack_on_the_same_data_root_shares_the_engine_and_leaves_it_to_its_owner(
    make_stack: list[Stack], tmp_path: Path
) -> None:
    owner = _stack(make_stack, tmp_path / "owner")
    owner.start(timeout=START_TIMEOUT)
    dockerd = owner.pid("docker")
    lines: list[str] = []
    borrower = _stack(make_stack, tmp_path / "borrower", lines=lines)

    borrower.start(timeout=START_TIMEOUT)

    assert borrower.pid("docker") == dockerd
    assert borrower.docker_host == owner.docker_host
    assert any(line.startswith("docker") and "already running" in line and "shared" in line for line in lines)
    borrower.stop()
    assert owner.pid("docker") == dockerd
    assert any(line.startswith("docker") and "left running" in line for line in lines), lines
    owner.stop()
    assert dockerd is not None
    assert _wait_dead([dockerd], timeout=1) == []


def test_with_corral_docker_host_set_nothing_is_started_and_that_engine_is_used(
    make_stack: list[Stack], tmp_path: Path
) -> None:
    owner = _stack(make_stack, tmp_path / "owner")
    owner.start(timeout=START_TIMEOUT)
    assert owner.docker_host is not None
    dockerd = owner.pid("docker")
    lines: list[str] = []
    external = _stack(make_stack, tmp_path / "external", lines=lines, CORRAL_DOCKER_HOST=owner.docker_host)

    external.start(timeout=START_TIMEOUT)

    assert external.docker_host == owner.docker_host
    docker_status = next(s for s in external.status() if s.name == "docker")
    assert docker_status.running
    assert docker_status.pid is None
    assert "CORRAL_DOCKER_HOST" in docker_status.detail
    assert not external.state.pid_file("docker").exists()
    assert any(line.startswith("sandbox-image") and "cached" in line for line in lines), lines
    external.stop()
    assert owner.pid("docker") == dockerd


def test_the_cli_builds_or_finds_the_image_and_prints_its_tag(make_stack: list[Stack], tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    stack = _stack(make_stack, state_dir)  # for the tag and the teardown safety net
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_") and k != "DATABASE_URL"}
    env.update(CORRAL_STATE_DIR=str(state_dir), CORRAL_DOCKER_DATA_ROOT=str(DATA_ROOT))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "corral.devstack", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    tag_only = cli("image", "--tag-only")
    image = cli("image")

    assert tag_only.returncode == 0, tag_only.stderr
    assert tag_only.stdout == f"{stack.sandbox_image}\n"
    assert image.returncode == 0, image.stdout + image.stderr
    assert image.stdout.splitlines()[-1] == stack.sandbox_image
    assert "stopped" in image.stdout  # the engine it started for the build is stopped again
    assert stack.pid("docker") is None
