"""Two sandbox hosts, each a sandbox-manager driving its own Docker engine: a session's sandbox lives
on one of them, and when that host dies (its manager and its engine SIGKILLed) the session's next tool
call runs on the other host, in a new sandbox whose first result says the workspace was lost, and
the session ends its turn normally.

The stack's own manager is host A (its default host id, the machine's name); the test starts host B
beside it: a second dockerd with its own data root (``<CORRAL_DOCKER_DATA_ROOT>-host-b``, kept so the
sandbox image is loaded once) and a second manager (``CORRAL_SANDBOX_HOST_ID=host-b``). The session
is placed on B by writing its placement before its first call, as the harness's placement step
would when B is the better host (the choice itself is ``tests/unit/harness/test_placement.py``'s).

Before hosts, every manager served the one queue group: with two, a session's calls went to either,
so its sandbox (and workspace) changed under it from call to call, and a dead manager's sessions
waited on its subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import docker
import httpx
import pytest

from corral.bus import Bus
from corral.contracts.sandbox import SandboxHost, SandboxPlacement
from corral.contracts.sandbox_hosts import sandbox_hosts_spec, sandbox_placements_spec
from corral.devstack import processes
from corral.devstack.docker_engine import DockerEngine, docker_client
from corral.devstack.services import service_environment
from corral.devstack.stack import Stack
from corral.devstack.state import StateDir
from tests.e2e.conftest import DOCKER_DATA_ROOT
from tests.e2e.flows import all_events, open_stream, script, send_text, unique
from tests.e2e.test_tool_loop_sandbox import new_session, text_of, use
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

HOST_B = "host-b"


def containers_of(host: str) -> set[str]:
    """Short ids of the sandboxes running on the engine at ``host``."""
    client = docker.DockerClient(base_url=host)
    try:
        return {c.short_id for c in client.containers.list(filters={"label": "corral.managed=true"})}
    finally:
        client.close()


def load_image(source: str, target: str, image: str) -> None:
    """Copy the sandbox image from one engine to the other (``docker save | docker load``)."""
    into = docker_client(target)
    try:
        with contextlib.suppress(docker.errors.ImageNotFound):
            into.images.get(image)
            return
        out = docker_client(source)
        try:
            data = b"".join(out.api.get_image(image))
        finally:
            out.close()
        into.images.load(data)
    finally:
        into.close()


@contextlib.contextmanager
def host_b(stack: Stack, root: Path) -> Iterator[tuple[DockerEngine, Path]]:
    """Host B's engine and manager (its pid file), stopped at the end whatever became of them."""
    state = StateDir.at(root)
    data_root = Path((os.environ.get("CORRAL_DOCKER_DATA_ROOT") or DOCKER_DATA_ROOT) + "-host-b")
    engine = DockerEngine(state, data_root)
    manager_pid = root / "pids" / "sandbox-manager-b.pid"
    try:
        if not engine.is_running():
            engine.launch()
        engine.wait_ready(time.monotonic() + 120)
        assert stack.sandbox_image is not None and stack.docker_host is not None
        load_image(stack.docker_host, engine.host, stack.sandbox_image)
        env = service_environment("sandbox-manager", stack.service_context(), base=stack.environ)
        env.pop("CORRAL_SANDBOX_METRICS_PORT", None)
        env.update(
            CORRAL_DOCKER_HOST=engine.host,
            CORRAL_SANDBOX_HOST_ID=HOST_B,
            CORRAL_SANDBOX_POOL_SIZE="1",
        )
        processes.spawn(
            [sys.executable, "-m", "corral.sandbox_manager"],
            env=env,
            log_path=root / "logs" / "sandbox-manager-b.log",
            pid_path=manager_pid,
        )
        yield engine, manager_pid
    finally:
        pid = processes.read_pid_file(manager_pid)
        if pid is not None and processes.is_alive(pid):
            os.kill(pid, signal.SIGKILL)
        engine.stop()


async def test_a_session_whose_sandbox_host_dies_goes_on_on_another_host(
    stack: Stack,
    client: anthropic.AsyncAnthropic,
    model: httpx.AsyncClient,
    bus: Bus,
    tmp_path: Path,
) -> None:
    hosts = await bus.bind_key_value(sandbox_hosts_spec())
    placements = await bus.bind_key_value(sandbox_placements_spec())
    assert hosts is not None and placements is not None, "the stack's manager makes both buckets"

    async def advertised() -> dict[str, SandboxHost]:
        found = {}
        for key in await hosts.keys():
            entry = await hosts.get(key)
            if entry is not None:
                found[key] = SandboxHost.model_validate_json(entry.value)
        return found

    with host_b(stack, tmp_path) as (engine_b, manager_b):
        # both hosts advertise themselves ready (B once its engine and image are there)

        async def both_ready() -> bool:
            ads = await advertised()
            return len(ads) == 2 and all(ad.ready for ad in ads.values())

        await eventually(both_ready, timeout=120, every=0.2)
        [host_a] = [h for h in await advertised() if h != HOST_B]
        assert stack.docker_host is not None

        name = unique("sandbox-hosts")
        await script(
            model,
            name,
            use("bash", command="hostname && echo kept > notes.txt"),
            [{"type": "text", "text": "On the first host."}],
            use("bash", command="hostname && (cat notes.txt 2>&1 || true)"),
            use("bash", command="hostname"),
            [{"type": "text", "text": "Still going."}],
        )
        session_id = await new_session(client)
        placed = SandboxPlacement(host=HOST_B, at=time.time())
        await placements.create(session_id, placed.model_dump_json().encode())

        stream = await open_stream(client, session_id)
        async with stream:
            await send_text(client, session_id, f"{name}: where do you run?")
            async with asyncio.timeout(120):
                async for event in stream:
                    if event.type == "session.status_idle":
                        break
            first = [e for e in await all_events(client, session_id) if e.type == "agent.tool_result"]
            assert len(first) == 1 and not first[0].is_error, text_of(first[0])
            container_b = text_of(first[0]).split()[0]
            assert container_b in containers_of(engine_b.host), "the sandbox ran on host B, where it was placed"

            # host B dies: its manager and its engine, SIGKILLed
            pid = processes.read_pid_file(manager_b)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            engine_pid = engine_b.recorded_pid()
            assert engine_pid is not None
            os.kill(engine_pid, signal.SIGKILL)

            await send_text(client, session_id, f"{name}: and now?")
            async with asyncio.timeout(120):
                async for event in stream:
                    if event.type == "session.status_idle":
                        break

        events = await all_events(client, session_id)
        results = [e for e in events if e.type == "agent.tool_result"]
        uses = [e for e in events if e.type == "agent.tool_use"]
        assert [r.tool_use_id for r in results] == [u.id for u in uses], "each call answered once, in order"
        assert len(results) == 3
        moved, after = results[1], results[2]
        # the call after the loss ran on host A, in a new sandbox, and said the workspace was lost
        assert not moved.is_error, text_of(moved)
        assert f"sandbox host {HOST_B}, which stopped answering" in text_of(moved), text_of(moved)
        assert "files in /workspace were lost" in text_of(moved)
        assert "No such file" in text_of(moved)  # notes.txt stayed on host B
        on_a = containers_of(stack.docker_host)
        container_a = text_of(after).split()[0]
        assert container_a in on_a and container_a != container_b, text_of(after)
        assert not after.is_error
        entry = await placements.get(session_id)
        assert entry is not None
        assert SandboxPlacement.model_validate_json(entry.value).host == host_a
        assert SandboxPlacement.model_validate_json(entry.value).previous == HOST_B
        assert events[-1].type == "session.status_idle"
        assert events[-1].stop_reason.type == "end_turn"
