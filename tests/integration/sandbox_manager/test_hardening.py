"""Inside a sandbox (reliability plan S2, S6, S8, S9): what code running there can and cannot do.

Every check runs through the real path: an ``execute`` request on the bus, the manager, the
Docker attach stream, the exec agent, bash in the container.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from corral.sandbox_manager.container_spec import SHM_INODES
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


# Mounts the engine itself makes (Corral cannot shape them): the root overlay, whose options name
# the engine's layer directories, and the generated network files bind-mounted from its data root.
ENGINE_OWN_MOUNTS = {"/", *DOCKER_GENERATED}
#: The sandbox's writable mounts: tmpfs capped in bytes and inodes (mqueue aside: the kernel caps it
#: per IPC namespace, and every sandbox has its own).
WRITABLE = {"/workspace", "/tmp", "/dev/shm"}


async def test_corrals_mounts_name_no_host_path_and_every_writable_one_caps_inodes(manager: Manager) -> None:
    sid = session()
    info = await asyncio.to_thread(manager.engine.client.info)
    data_root = str(info["DockerRootDir"])
    mountinfo = (await manager.execute(sid, "read", {"file_path": "/proc/self/mountinfo"})).content[-1].text
    mounts = {}
    for numbered in mountinfo.splitlines():
        line = numbered.split("\t", 1)[1]
        fields, _, tail = line.partition(" - ")
        root, target = fields.split()[3:5]
        fstype, source, options = tail.split()
        mounts[target] = (root, fstype, source, options)
    leaking = {
        target: mount
        for target, mount in mounts.items()
        if target not in ENGINE_OWN_MOUNTS
        and (
            mount[1] in HOST_FILESYSTEMS
            or any(
                data_root in part or part.startswith(("/var/", "/home/", "/srv/", "/run/", "/work")) for part in mount
            )
        )
    }
    assert leaking == {}, f"mounts that name host paths: {leaking}"
    # the host's workspace of this service is not named anywhere, the engine's mounts included
    assert os.getcwd() not in mountinfo
    writable = await manager.bash(
        sid,
        "while read -r _ _ _ _ target _; do "
        'if [ -d "$target" ] && [ -w "$target" ]; then echo "$target"; fi; done < /proc/self/mountinfo',
    )
    assert {t for t in writable.split() if mounts[t][1] != "mqueue"} == WRITABLE
    for target in WRITABLE:
        root, fstype, _, options = mounts[target]
        assert (root, fstype) == ("/", "tmpfs")
        assert "nr_inodes=" in options and "size=" in options, (target, options)


async def test_an_inode_fill_is_refused_to_the_filler_and_the_sandbox_keeps_working(manager: Manager) -> None:
    sid = session()
    container_id = (await manager.provision(sid)).container_id
    # empty files until the filesystem says no (or 400 000 of them: far past any cap, below any OOM)
    fill = (
        "import errno, os, sys, time\n"
        "where, made, stop = sys.argv[1], 0, time.monotonic() + 60\n"
        "os.makedirs(where, exist_ok=True)\n"
        "try:\n"
        "    while made < 400_000 and time.monotonic() < stop:\n"
        "        open(f'{where}/f{made}', 'w').close()\n"
        "        made += 1\n"
        "    print(where, made, 'none')\n"
        "except OSError as exc:\n"
        "    print(where, made, errno.errorcode[exc.errno])\n"
    )
    await manager.execute(sid, "write", {"file_path": "fill.py", "content": fill})
    box = manager.settings.sandbox
    for where, cap in (
        ("/workspace/many", box.workspace_inodes),
        ("/tmp/many", box.tmp_inodes),
        ("/dev/shm/many", SHM_INODES),
    ):
        out = await manager.bash(sid, f"python3 /workspace/fill.py {where}", timeout_ms=90_000)
        _, made, outcome = out.split()
        assert outcome == "ENOSPC", out
        assert int(made) < cap
    # the agent and its shell were untouched: same container, tools work, and space comes back
    assert (await manager.provision(sid)).container_id == container_id
    assert (
        await manager.bash(sid, "rm -rf /workspace/many /tmp/many /dev/shm/many && echo > /workspace/ok && echo ok")
        == "ok\n"
    )
    written = await manager.execute(sid, "write", {"file_path": "after.txt", "content": "fine"})
    assert not written.is_error
