"""The faults (Jepsen's "nemesis"): kill a component with SIGKILL and start it again, or pause it with
SIGSTOP and resume it with SIGCONT, by the pid the devstack keeps for it (``Stack.kill``).

Targets are component names of the devstack (``Stack.component``), or a role resolved when the fault
lands: ``harness`` is the harness worker holding the lease of one of the workload's sessions (the one
mid-turn), else ``harness-1``; with several sandbox hosts, ``sandbox-manager`` is the manager of the
host one of the workload's sessions is placed on; with several session-stores, ``PROJECTING`` is the
store holding the projection's advisory lock and ``FOLLOWING`` one that does not; ``SANDBOX_ENGINE``
is the Docker engine (``docker``, ``docker-2``...) of the host one of the workload's sessions is placed
on (killed, it is started again by ``Stack.start``; the sandbox-manager finds its sessions' containers
stopped or gone).
On a NATS cluster (``CORRAL_NATS_CLUSTER=3``): ``nats-leader`` is the node leading the session log,
``nats-follower`` another node, ``nats-all`` every node (killed together, restarted together); a killed
node is started again on its store. Two more actions there (``cluster.py``): ``partition`` cuts a node
off from the others' routes for ``PAUSE_S``, ``disk-full`` fills its store's file system for
``PAUSE_S`` (only ``cluster.SMALL_DISK_NODE``, whose store is a tmpfs).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import asyncpg

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.sandbox_hosts import sandbox_placements_spec
from corral.devstack import processes
from corral.devstack.replicas import DOCKER_PREFIX, replica_name, split_name
from corral.devstack.stack import Stack
from corral.devstack.topology import DOCKER
from corral.session_store.projector import LOCK_KEY
from tests.e2e.flows import LEASE_TTL_S
from tests.faults import cluster
from tests.faults.history import History

#: The five services, by the name a scenario gives them.
SERVICES: Final = ("gateway", "session-store", "harness", "sandbox-manager", "credential-proxy")
#: With two session-stores: the one that projects into Postgres, and the other.
PROJECTING: Final = "session-store:projecting"
FOLLOWING: Final = "session-store:following"
#: The Docker engine of a session's sandbox host.
SANDBOX_ENGINE: Final = "sandbox-engine"
#: One replica of each service on a stack with two of every service (``conftest.TWO_OF_EACH``).
REPLICAS: Final = ("gateway", PROJECTING, FOLLOWING, "harness", "sandbox-manager", "credential-proxy")
#: Longer than the harness's lease (``LEASE_TTL_S``), so a paused lease holder loses its lease.
PAUSE_S: Final = float(LEASE_TTL_S) + 1.5
#: A restarted component is healthy again within this (a liveness bound, not a timing).
RESTART_TIMEOUT_S: Final = 120.0

Action = Literal["kill", "pause", "partition", "disk-full"]
_VERBS: Final = {"kill": "SIGKILL", "pause": "SIGSTOP", "partition": "partition", "disk-full": "disk full on"}


@dataclass(frozen=True)
class Fault:
    action: Action
    target: str

    def __str__(self) -> str:
        return f"{_VERBS[self.action]} {self.target}"


#: Every single-node fault the soak picks from.
ALL_FAULTS: Final = (
    *(Fault(action, service) for service in SERVICES for action in ("kill", "pause")),
    Fault("kill", "postgres"),
)
#: One replica of each service paused or killed, Postgres killed, and a session's sandbox host's Docker
#: engine killed, on a stack with two of each (the cluster soak draws these).
REPLICA_FAULTS: Final = (
    *(Fault(action, target) for target in REPLICAS for action in ("kill", "pause")),
    Fault("kill", "postgres"),
    Fault("kill", SANDBOX_ENGINE),
)
#: The faults of a three-node NATS cluster (the soak on the cluster draws from these and ``ALL_FAULTS``).
NATS_FAULTS: Final = (
    Fault("kill", "nats-leader"),
    Fault("kill", "nats-follower"),
    Fault("kill", "nats-all"),
    Fault("partition", "nats-leader"),
    Fault("disk-full", cluster.SMALL_DISK_NODE),
)


async def harness_of(stack: Stack, sessions: Iterable[str]) -> str:
    """The harness worker holding a lease of one of ``sessions`` (a turn in progress), else harness-1."""
    async with Bus.connect(stack.nats_settings(), name="fault-nemesis") as bus:
        bucket = await bus.bind_key_value(subjects.lease_spec(float(LEASE_TTL_S)))
        assert bucket is not None, "the session-store makes the lease bucket before it is ready"
        # at once, not one after the other: a busy test process (200 clients) answers each read late,
        # and most sessions hold no lease between turns, so reads in turn took minutes per fault
        entries = await asyncio.gather(*(bucket.get(session) for session in sessions))
    for entry in entries:
        if entry is not None:
            return str(json.loads(entry.value)["holder"])
    return "harness-1"


async def sandbox_manager_of(stack: Stack, sessions: Iterable[str]) -> str:
    """The sandbox-manager of the host one of ``sessions`` is placed on, else the first."""
    async with Bus.connect(stack.nats_settings(), name="fault-nemesis") as bus:
        placements = await bus.bind_key_value(sandbox_placements_spec())
        if placements is None:  # no session placed yet
            return "sandbox-manager"
        for session in sessions:
            entry = await placements.get(session)
            if entry is not None:
                numbered = re.fullmatch(r"sandbox-host-([0-9]+)", str(json.loads(entry.value)["host"]))
                return replica_name("sandbox-manager", int(numbered[1])) if numbered else "sandbox-manager"
    return "sandbox-manager"


async def session_store_by_role(stack: Stack, *, projecting: bool) -> str:
    """The session-store holding the projection's advisory lock (``projecting``), or another one: the
    lock holder's Postgres connection, by its client port, among each store's TCP sockets."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        port = await conn.fetchval(
            "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.objid = $1 AND l.granted",
            LOCK_KEY,
        )
    finally:
        await conn.close()
    assert port is not None, "no session-store holds the projection's lock"
    stores = [name for name in stack.service_names() if name.startswith("session-store")]
    assert len(stores) > 1, "a store's role needs two session-stores"
    for name in stores:
        pid = stack.pid(name)
        holds = pid is not None and any(local == port for local, _ in cluster.tcp_connections(pid))
        if holds == projecting:
            return name
    raise AssertionError(f"no session-store {'holds' if projecting else 'lacks'} the lock (port {port})")


async def inject(stack: Stack, fault: Fault, history: History, sessions: Iterable[str]) -> str:
    """Apply ``fault`` and repair it (restart, or resume); the component's name. Marks the history."""
    name = await _resolve(stack, fault.target, sessions)
    history.mark(f"{fault} ({name}) begins")
    if fault.action == "kill" and name == "nats-all":
        for node in stack.nats_nodes():
            await asyncio.to_thread(stack.kill, node.name, signal.SIGKILL)
        history.mark(f"{name} killed")
        await _restart(stack, fault, "nats")
    elif fault.action == "kill":
        await asyncio.to_thread(stack.kill, name, signal.SIGKILL)
        history.mark(f"{name} killed")
        await _restart(stack, fault, name)
    elif fault.action == "partition":
        partition = cluster.Partition(stack, name)
        try:
            await asyncio.to_thread(partition.cut)
            history.mark(f"{name} cut off")
            await asyncio.sleep(PAUSE_S)  # the fault's length
        finally:
            await asyncio.to_thread(partition.heal)
    elif fault.action == "disk-full":
        store = cluster.store_dir(stack.state.root, name)
        try:
            took = await asyncio.to_thread(cluster.fill, store)
            history.mark(f"{name}'s store full ({took} bytes filled)")
            await asyncio.sleep(PAUSE_S)  # the fault's length
        finally:
            await asyncio.to_thread(cluster.unfill, store)
        if not await asyncio.to_thread(_node_serves, stack, name):  # JetStream gave up on the full disk
            history.mark(f"{name} has JetStream off after its disk filled; restarted")
            await asyncio.to_thread(stack.kill, name, signal.SIGKILL)
            await _restart(stack, fault, name)
    else:
        await asyncio.to_thread(stack.kill, name, signal.SIGSTOP)
        try:
            await asyncio.sleep(PAUSE_S)  # the fault's length: the process stays stopped this long
        finally:
            await asyncio.to_thread(stack.kill, name, signal.SIGCONT)
    history.mark(f"{fault} ({name}) repaired")
    _outlived(stack, fault, name)
    return name


def _outlived(stack: Stack, fault: Fault, name: str) -> None:
    """Every service but the fault's target outlives a fault: one that exited fails the scenario with
    its log's last lines, rather than being started again by the repair and passed over."""
    dead = [service for service in stack.service_names() if service != name and stack.pid(service) is None]
    if dead:
        logs = "\n".join(f"--- {service}:\n{processes.tail(stack.component(service).log_file, 40)}" for service in dead)
        raise AssertionError(f"{', '.join(dead)} exited during {fault} ({name}):\n{logs}")


async def _resolve(stack: Stack, target: str, sessions: Iterable[str]) -> str:
    if target == "harness":
        return await harness_of(stack, sessions)
    if target == "sandbox-manager":
        return await sandbox_manager_of(stack, sessions)
    if target == SANDBOX_ENGINE:
        _, host = split_name(await sandbox_manager_of(stack, sessions))
        return DOCKER if host == 1 else f"{DOCKER_PREFIX}{host}"
    if target in (PROJECTING, FOLLOWING):
        return await session_store_by_role(stack, projecting=target == PROJECTING)
    if target in ("nats-leader", "nats-follower"):
        leader = await asyncio.to_thread(cluster.stream_leader, stack)
        assert leader is not None, "the session log has no leader"
        if target == "nats-leader":
            return leader
        return next(node.name for node in stack.nats_nodes() if node.name != leader)
    return target


def _node_serves(stack: Stack, name: str) -> bool:
    node = next(node for node in stack.nats_nodes() if node.name == name)
    return node.is_running() and node.healthy()


async def _restart(stack: Stack, fault: Fault, name: str) -> None:
    if name == "postgres" or name.startswith(("nats", DOCKER)):
        _outlived(stack, fault, name)  # before the start below starts what is not running
        await asyncio.to_thread(stack.start, RESTART_TIMEOUT_S)  # starts what is not running
    else:
        await asyncio.to_thread(stack.start_service, name, RESTART_TIMEOUT_S)
    await every_replica_ready(stack, RESTART_TIMEOUT_S)


#: How much of a service's log is read for its last start and its word that it is ready.
_LOG_TAIL_BYTES: Final = 256 * 1024
_LAUNCHED = "--- corral-dev "


async def every_replica_ready(stack: Stack, timeout_s: float) -> None:
    """Until every service process has said it is ready since it was last started. A started stack
    is up once every service answers on the bus, which one replica of each does: a fault that lands
    on a second replica still starting (two session-stores, say) ends that start-up, which is not the
    fault under test (F8 once killed every NATS node under a session-store still looking for its
    buckets, and the store exited)."""
    deadline = time.monotonic() + timeout_s
    for name in stack.service_names():
        log = stack.component(name).log_file
        while not _ready_since_started(log):
            if stack.pid(name) is None:  # it exited during its start-up: started again, as before
                await asyncio.to_thread(stack.start, max(1.0, deadline - time.monotonic()))
            elif time.monotonic() > deadline:
                raise AssertionError(
                    f"{name} did not say it was ready within {timeout_s} s:\n{processes.tail(log, 40)}"
                )
            await asyncio.sleep(0.2)


def _ready_since_started(log: Path) -> bool:
    """Whether the log says ``<service> ready`` after its last start; a log whose tail holds no start
    is of a process up long enough to have written that much since, so past its start-up."""
    try:
        with log.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - _LOG_TAIL_BYTES, 0))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return False
    started = text.rfind(_LAUNCHED)
    if started < 0:
        return True
    return any('"logger": "corral.runner"' in line and ' ready"' in line for line in text[started:].splitlines())
