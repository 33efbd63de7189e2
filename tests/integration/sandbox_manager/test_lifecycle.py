"""A sandbox-manager restart, orphans and idle sandboxes (reliability plan F22): containers are found
by label and either serve their session again, rejoin the pool, or are removed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from corral.bus import Bus, NoResponders
from corral.sandbox_manager.container_spec import LABEL_MANAGED, LABEL_POOL, LABEL_SCOPE, LABEL_SESSION
from corral.sandbox_manager.settings import Settings
from tests.integration.sandbox_manager.conftest import (
    Engine,
    Manager,
    containers_of,
    eventually,
    remove_scope,
    running_manager,
    sandbox_settings,
)

pytestmark = pytest.mark.integration


def session() -> str:
    return f"sesn_{uuid.uuid4().hex}"


async def test_a_restarted_manager_reattaches_to_its_sessions_and_reaps_orphans(
    nats_url: str, bus: Bus, engine: Engine
) -> None:
    box = sandbox_settings(engine, pool_size=1)
    warm_sid, cold_sid = session(), session()
    try:
        async with running_manager(nats_url, bus, engine, box) as first:
            await first.wait_pool_full()
            pooled = await first.provision(warm_sid)
            assert pooled.from_pool
            await first.bash(warm_sid, "cd /tmp && export KEPT=no && echo warm > /workspace/state.txt")
            cold = await first.provision(cold_sid)
            await first.bash(cold_sid, "echo cold > /workspace/state.txt")
        # stopped cleanly: session containers stay, the pool is emptied
        left = containers_of(engine, box.scope)
        assert set(left) == {pooled.container_id, cold.container_id}
        assert left[pooled.container_id].get(LABEL_POOL) == "true"  # labels cannot say whose it became

        orphan = engine.client.containers.run(
            box.image,
            ["sleep", "600"],
            detach=True,
            network_mode="none",
            labels={LABEL_MANAGED: "true", LABEL_SCOPE: box.scope, LABEL_SESSION: "sesn_gone"},
        )
        async with running_manager(nats_url, bus, engine, box) as second:
            assert await second.bash(warm_sid, "cat /workspace/state.txt") == "warm\n"
            assert await second.bash(cold_sid, "cat /workspace/state.txt") == "cold\n"
            assert (await second.provision(warm_sid)).container_id == pooled.container_id
            # the shell lives in the container, so even its working directory survived
            assert await second.bash(warm_sid, "pwd; echo $KEPT") == "/tmp\nno\n"
            assert orphan.id not in set(containers_of(engine, box.scope))
    finally:
        remove_scope(engine, box.scope)


async def test_an_unknown_container_is_reaped_while_running(nats_url: str, bus: Bus, engine: Engine) -> None:
    box = sandbox_settings(engine, pool_size=0, reap_interval_s=0.2, orphan_grace_s=0)
    try:
        async with running_manager(nats_url, bus, engine, box):
            orphan = engine.client.containers.run(
                box.image,
                ["sleep", "600"],
                detach=True,
                network_mode="none",
                labels={LABEL_MANAGED: "true", LABEL_SCOPE: box.scope},
            )

            async def reaped() -> bool:
                return orphan.id not in set(containers_of(engine, box.scope))

            await eventually(reaped)
    finally:
        remove_scope(engine, box.scope)


async def test_an_idle_sandbox_is_removed_and_the_next_call_says_so(nats_url: str, bus: Bus, engine: Engine) -> None:
    box = sandbox_settings(engine, pool_size=0, idle_s=0.5)
    sid = session()
    try:
        async with running_manager(nats_url, bus, engine, box) as manager:
            first = (await manager.provision(sid)).container_id
            await manager.bash(sid, "echo x > /workspace/x.txt")

            async def removed() -> bool:
                return first not in set(containers_of(engine, box.scope))

            await eventually(removed)
            outcome = await manager.execute(sid, "bash", {"command": "ls /workspace"})
            assert [b.text for b in outcome.content] == [
                "The previous sandbox of this session was removed after 0.5 s without tool calls; this is a new "
                "sandbox, and files in /workspace were lost.",
                "(no output)",
            ]
    finally:
        remove_scope(engine, box.scope)


async def test_an_environment_allowing_network_access_without_an_egress_proxy_is_told_it_has_none(
    nats_url: str, bus: Bus, engine: Engine
) -> None:
    box = sandbox_settings(engine, pool_size=0)
    sid = session()
    config = {"type": "cloud", "networking": {"type": "unrestricted"}}
    try:
        async with running_manager(nats_url, bus, engine, box) as manager:  # and no credential-proxy
            provisioned = await manager.provision(sid, config)
            assert provisioned.network == "none"
            assert len(provisioned.notices) == 1
            assert "egress proxy (no credential-proxy is running)" in provisioned.notices[0]
            assert "no network" in provisioned.notices[0]
            first = await manager.execute(sid, "bash", {"command": "ls /sys/class/net; echo ${https_proxy:-unset}"})
            assert [b.text for b in first.content] == [*provisioned.notices, "lo\nunset\n"]
            second = await manager.execute(sid, "bash", {"command": "echo once"})
            assert [b.text for b in second.content] == ["once\n"]  # notices are said once
    finally:
        remove_scope(engine, box.scope)


async def test_after_a_kill_9_the_next_manager_reattaches_reuses_the_pool_and_never_reruns_a_cut_call(
    nats_url: str, bus: Bus, engine: Engine, tmp_path: Path
) -> None:
    """F22: the manager process dies with a tool call in flight and containers running."""
    box = sandbox_settings(engine, pool_size=2)
    sid, cut = session(), f"toolu_{uuid.uuid4().hex}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CORRAL_NATS_URL": nats_url,
        "CORRAL_DOCKER_HOST": engine.host,
        **{f"CORRAL_SANDBOX_{name.upper()}": str(value) for name, value in box.model_dump().items()},
    }
    log = (tmp_path / "manager.log").open("wb")
    process = subprocess.Popen(  # noqa: ASYNC220  # started and stopped by pid, never awaited
        [sys.executable, "-m", "corral.sandbox_manager"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        first = Manager(bus=bus, settings=Settings(sandbox=box), engine=engine, stop=asyncio.Event(), task=None)

        async def pool_full() -> bool:
            with contextlib.suppress(NoResponders, TimeoutError):
                return (await first.health()).details.get("pools", "").endswith(":2/2")
            return False

        await eventually(pool_full, timeout=30)
        container_id = (await first.provision(sid)).container_id
        await first.bash(sid, "echo kept > /workspace/state.txt")
        await eventually(pool_full, timeout=30)
        pooled = set(containers_of(engine, box.scope)) - {container_id}
        in_flight = asyncio.ensure_future(
            first.execute(sid, "bash", {"command": "echo begun >> /workspace/cut.log; sleep 30"}, tool_use_id=cut)
        )

        async def begun() -> bool:  # (read, not bash: the shell is busy with the call)
            return "begun" in (await first.execute(sid, "read", {"file_path": "cut.log"})).content[-1].text

        await eventually(begun, timeout=10)
        process.kill()
        process.wait(timeout=10)
        in_flight.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await in_flight
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log.close()
    try:
        async with running_manager(nats_url, bus, engine, box) as second:
            assert set(containers_of(engine, box.scope)) == pooled | {container_id}
            assert (await second.provision(sid)).container_id == container_id
            # the cut call was stopped when the container was adopted, so the shell is free at once
            assert await second.bash(sid, "cat /workspace/state.txt", timeout_ms=5000) == "kept\n"
            again = await second.execute(sid, "bash", {"command": "echo begun >> /workspace/cut.log"}, tool_use_id=cut)
            assert again.is_error and not again.executed
            assert again.content[-1].text.startswith("this tool call was interrupted")
            assert await second.bash(sid, "wc -l < /workspace/cut.log") == "1\n"
            assert (await second.health()).details["pools"].endswith(":2/2")
    finally:
        remove_scope(engine, box.scope)


async def test_a_call_whose_sandbox_is_not_ready_in_time_is_answered_not_run_and_later_calls_work(
    nats_url: str, bus: Bus, engine: Engine
) -> None:
    # a cold start (~0.2 s here) outlasts a 50 ms wait: the call is answered without running
    box = sandbox_settings(engine, pool_size=0, provision_wait_s=0.05)
    sid, early = session(), f"toolu_{uuid.uuid4().hex}"
    try:
        async with running_manager(nats_url, bus, engine, box) as manager:
            marker = "/workspace/ran"
            first = await manager.execute(sid, "bash", {"command": f"touch {marker}"}, tool_use_id=early)
            assert first.is_error and not first.executed
            assert "still being prepared" in first.content[0].text and "call the tool again" in first.content[0].text
            # the same call again gets the same answer: it never runs late
            again = await manager.execute(sid, "bash", {"command": f"touch {marker}"}, tool_use_id=early)
            assert [b.text for b in again.content] == [b.text for b in first.content]
            # the preparation went on (provision joins it): once it is done, a new call runs in that sandbox
            provisioned = await manager.provision(sid)
            assert provisioned.container_id in containers_of(engine, box.scope)
            later = await manager.execute(sid, "bash", {"command": f"test -e {marker} && echo ran || echo clean"})
            assert not later.is_error and later.content[-1].text == "clean\n"
    finally:
        remove_scope(engine, box.scope)
