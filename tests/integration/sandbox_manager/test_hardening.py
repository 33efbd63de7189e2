"""Inside a sandbox (reliability plan S2, S6, S8, S9): what code running there can and cannot do.

Every check runs through the real path: an ``execute`` request on the bus, the manager, the
Docker attach stream, the exec agent, bash in the container.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.integration.sandbox_manager.conftest import Manager

pytestmark = pytest.mark.integration

# Bind mounts Docker itself makes for every container (generated files, read-only here).
DOCKER_GENERATED = {"/etc/resolv.conf", "/etc/hostname", "/etc/hosts"}
# the container's pids limit as it sees it, under cgroup v2 or v1
PIDS_MAX = "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max"
HOST_FILESYSTEMS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "vfat", "nfs", "nfs4", "9p", "virtiofs", "fuse"}


def session() -> str:
    return f"sesn_{uuid.uuid4().hex}"


async def test_the_sandbox_has_no_effective_capabilities(manager: Manager) -> None:
    out = await manager.bash(session(), "grep -E '^Cap(Eff|Prm|Bnd|Amb):' /proc/self/status")
    caps = dict(line.split(":\t") for line in out.strip().splitlines())
    assert caps == {
        "CapEff": "0000000000000000",
        "CapPrm": "0000000000000000",
        "CapBnd": "0000000000000000",
        "CapAmb": "0000000000000000",
    }


async def test_tools_run_as_a_user_that_is_not_root(manager: Manager) -> None:
    out = await manager.bash(session(), "id -u; id -g; grep NoNewPrivs /proc/self/status")
    uid, gid, nnp = out.strip().splitlines()
    assert (uid, gid) == ("1000", "1000")
    assert nnp.split() == ["NoNewPrivs:", "1"]


async def test_a_network_none_sandbox_has_only_the_loopback_interface(manager: Manager) -> None:
    out = await manager.bash(session(), "ls /sys/class/net")
    assert out.split() == ["lo"]


async def test_the_root_filesystem_is_read_only(manager: Manager) -> None:
    sid = session()
    out = await manager.bash(sid, "touch /etc/corral-probe; touch /usr/bin/corral-probe; echo done")
    assert out.count("Read-only file system") == 2, out
    written = await manager.execute(sid, "write", {"file_path": "/opt/probe.txt", "content": "x"})
    assert written.is_error and "Read-only file system" in written.content[-1].text
    assert "rw" not in (await manager.bash(sid, "awk '$2 == \"/\" {print $4}' /proc/mounts")).split(",")[0]


async def test_filling_the_workspace_hits_its_cap_and_the_sandbox_recovers(manager: Manager) -> None:
    sid = session()
    out = await manager.bash(sid, "dd if=/dev/zero of=/workspace/fill bs=1M count=200 2>&1; df -m /workspace")
    assert "No space left on device" in out
    total_mb = int(out.strip().splitlines()[-1].split()[1])
    assert total_mb <= 64
    full = await manager.execute(sid, "write", {"file_path": "more.txt", "content": "x" * 1_000_000})
    assert full.is_error and "No space left on device" in full.content[-1].text
    await manager.bash(sid, "rm /workspace/fill")
    again = await manager.execute(sid, "write", {"file_path": "more.txt", "content": "fits now"})
    assert not again.is_error
    tmp = await manager.bash(sid, "dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>&1; rm -f /tmp/fill")
    assert "No space left on device" in tmp


async def test_no_docker_socket_and_no_host_path_is_visible(manager: Manager) -> None:
    sid = session()
    out = await manager.bash(
        sid, "ls -la /var/run/docker.sock /run/docker.sock 2>&1; find / -xdev -name 'docker.sock' 2>/dev/null; true"
    )
    assert out.count("No such file or directory") == 2, out
    mounts = await manager.execute(sid, "read", {"file_path": "/proc/mounts"})
    host_backed = set()
    for line in mounts.content[-1].text.splitlines():
        source, target, fstype = line.split("\t", 1)[1].split()[:3]
        del source
        if fstype in HOST_FILESYSTEMS:
            host_backed.add(target)
    assert host_backed <= DOCKER_GENERATED, f"host filesystems mounted at {host_backed - DOCKER_GENERATED}"
    env = await manager.bash(sid, "env | cut -d= -f1 | sort")
    assert not {"DOCKER_HOST", "CORRAL_DOCKER_HOST", "CORRAL_NATS_URL"} & set(env.split())


async def test_a_fork_bomb_is_held_by_the_pids_limit_and_the_sandbox_recovers(manager: Manager) -> None:
    sid, neighbour = session(), session()
    await manager.bash(neighbour, "echo ready")
    bomb = await manager.execute(
        sid, "bash", {"command": "bomb() { bomb | bomb & }; bomb; sleep 5", "timeout_ms": 4000}
    )
    assert bomb.is_error and "timed out" in bomb.content[-1].text
    # meanwhile the host and another session were unaffected, and the bomb never got past the limit
    limit = manager.settings.sandbox.pids
    neighbour_out, host = await asyncio.gather(
        manager.bash(neighbour, f"echo alive; {PIDS_MAX}"),
        asyncio.create_subprocess_exec("true"),
    )
    assert neighbour_out.split() == ["alive", str(limit)]
    assert await host.wait() == 0
    peak = await manager.bash(sid, f"{PIDS_MAX}; ls /proc | grep -c '^[0-9]'")
    pids_max, running = peak.split()
    assert int(pids_max) == limit and int(running) < 20  # the timeout killed the bomb's process group
    assert (await manager.bash(sid, "ls / | head -1 && echo works")).strip().endswith("works")
