"""The faults of a three-node NATS cluster (the devstack's ``CORRAL_NATS_CLUSTER=3``) beyond a kill:
which node leads the session log, a network partition of one node, and one node's disk full.

**Partition.** Every node listens on ``127.0.0.1``, so a node is cut off by its process and its route
ports: the node's pid goes into a cgroup of its own (cgroup v2) and ``iptables`` drops, in both
directions, every packet of a route connection between it and the others: to and from its route
port, from it (the cgroup) to the others' route ports, and to the local ports of the route connections
it had opened. Its client port stays open, so the services connected to it stay connected to a node
that cannot reach the others, as in a real partition. Packets are dropped, not refused: the
connections stall, and once the rules are removed they go on (TCP retransmits) or are redialled.

**Disk full.** The node's JetStream store is a small tmpfs (mounted before the stack starts, see
``store_on_tmpfs``); the fault fills it with a file and the repair deletes it.

Both need root, as the devstack's Docker engine does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from corral.contracts import subjects
from corral.devstack.nats import node_name
from corral.devstack.probes import http
from corral.devstack.stack import Stack
from corral.devstack.state import StateDir

#: cgroup v2, where a partitioned node's process is put so ``iptables -m cgroup`` can match it.
_UNIFIED: Final = Path("/sys/fs/cgroup/unified")
CGROUP_ROOT: Final = _UNIFIED if _UNIFIED.is_dir() else Path("/sys/fs/cgroup")
#: The node whose store is a tmpfs (the disk-full fault's target), and that tmpfs's size.
SMALL_DISK_NODE: Final = node_name(3)
SMALL_DISK_BYTES: Final = 256 * 2**20
FILLER: Final = "filler"


def stream_leader(stack: Stack, stream: str = subjects.SESSIONS_STREAM) -> str | None:
    """The node leading ``stream`` (its ``cluster.leader``), as the first node that answers sees it."""
    for node in stack.nats_nodes():
        if not node.is_running():
            continue
        response = http("GET", f"{node.monitor_url}/jsz?streams=true")
        if response is None or response.status != 200:
            continue
        for account in response.json().get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail["name"] == stream:
                    leader = (detail.get("cluster") or {}).get("leader")
                    return str(leader) if leader else None
    return None


def store_dir(state_dir: Path, name: str) -> Path:
    """A cluster node's JetStream store (as ``corral.devstack.nats.Nats.store_dir``), before the stack exists."""
    return StateDir.at(state_dir).data("nats-cluster") / name


@contextlib.contextmanager
def store_on_tmpfs(state_dir: Path, name: str = SMALL_DISK_NODE) -> Iterator[Path]:
    """Node ``name``'s store on a tmpfs of ``SMALL_DISK_BYTES``, for the stack's lifetime (enter it
    before the stack starts, leave it after the stack stopped)."""
    path = store_dir(state_dir, name)
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK_BYTES}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def fill(path: Path) -> int:
    """Fill the file system of ``path`` with one file, written until it is full; the bytes it took."""
    written = 0
    with (path / FILLER).open("wb", buffering=0) as filler:
        for chunk in (b"\0" * 2**20, b"\0" * 4096, b"\0"):
            try:
                while True:
                    written += filler.write(chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
    return written


def unfill(path: Path) -> None:
    (path / FILLER).unlink(missing_ok=True)


def tcp_connections(pid: int) -> list[tuple[int, int]]:
    """(local port, remote port) of each TCP socket process ``pid`` holds (IPv4, from ``/proc``)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    found = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            found.append((int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)))
    return found


class Partition:
    """One node cut off from the others' routes (see the module's docstring); ``heal`` undoes it."""

    def __init__(self, stack: Stack, name: str) -> None:
        self.stack = stack
        self.name = name
        self.cgroup = CGROUP_ROOT / f"corral-partition-{os.getpid()}-{name}"
        self.rules: list[list[str]] = []
        self.pid: int | None = None

    def cut(self) -> None:
        ports = {node.name: node.route_port for node in self.stack.nats_nodes()}
        own = ports[self.name]
        others = sorted(port for name, port in ports.items() if name != self.name and port is not None)
        assert own is not None and others, "a partition needs a cluster"
        self.pid = self.stack.pid(self.name)
        assert self.pid is not None, f"{self.name} is not running"
        self.cgroup.mkdir(exist_ok=True)
        (self.cgroup / "cgroup.procs").write_text(str(self.pid))
        peers = ",".join(map(str, others))
        dialled = sorted(local for local, remote in tcp_connections(self.pid) if remote in others)
        drop = ["-m", "comment", "--comment", self.cgroup.name, "-j", "DROP"]
        mine = ["-m", "cgroup", "--path", self.cgroup.name]
        self.rules = [
            ["-p", "tcp", "--dport", str(own), *drop],
            ["-p", "tcp", "--sport", str(own), *drop],
            ["-p", "tcp", *mine, "-m", "multiport", "--dports", peers, *drop],
            *(["-p", "tcp", "--dport", str(port), "-m", "multiport", "--sports", peers, *drop] for port in dialled),
        ]
        added: list[list[str]] = []
        try:
            for rule in self.rules:
                subprocess.run(["iptables", "-w", "-I", "OUTPUT", *rule], check=True, capture_output=True)
                added.append(rule)
        finally:
            self.rules = added

    def heal(self) -> None:
        for rule in self.rules:
            subprocess.run(["iptables", "-w", "-D", "OUTPUT", *rule], check=False, capture_output=True)
        self.rules = []
        if self.pid is not None:
            with contextlib.suppress(OSError):  # back to the root cgroup, unless it has exited
                (CGROUP_ROOT / "cgroup.procs").write_text(str(self.pid))
        with contextlib.suppress(OSError):
            self.cgroup.rmdir()
