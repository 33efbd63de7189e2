"""NATS JetStream: ``nats-server -js`` with its store under ``data/nats``, its users and its durability;
or, with ``CORRAL_NATS_CLUSTER=3``, three such servers on loopback forming one JetStream cluster.

Each server reads its own config (0600, rewritten on each start): one user per service with its
allow lists, plus ``admin``, in the ``CORRAL`` account, and the read-only ``subscriber`` in
``SUBSCRIBERS`` (see ``corral.devstack.nats_users``), and JetStream's ``sync_interval``:
how often the store is flushed to disk (``CORRAL_NATS_SYNC_INTERVAL``, default ``always``).

A cluster's node ``i`` (1-based) is the component ``nats`` (node 1) or ``nats-<i>``, listening on
``CORRAL_NATS_PORT + i - 1`` (clients), ``CORRAL_NATS_MONITOR_PORT + i - 1`` (monitoring) and
``CORRAL_NATS_CLUSTER_PORT + i - 1`` (routes to the other nodes), its store under
``data/nats-cluster/<name>`` (apart from a single server's ``data/nats``, so switching between the two
never mixes their stores). Its JetStream ``server_name`` is its component name, which is what a
stream's ``cluster.leader`` names: ``Stack.kill(leader)`` stops that node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from corral.devstack import processes
from corral.devstack.components import Component, PortClaim, find_binary
from corral.devstack.configuration import DEFAULT_SYNC_INTERVAL, process_environment
from corral.devstack.nats_accounts import accounts, move_global_store
from corral.devstack.nats_users import NatsUsers
from corral.devstack.ports import HOST, Ports
from corral.devstack.probes import http, http_status
from corral.devstack.state import StateDir, write_private

#: The JetStream cluster's name (routes only join servers of the same name).
CLUSTER_NAME = "corral"


def node_name(index: int) -> str:
    """Node ``index``'s component (and JetStream server) name: ``nats``, ``nats-2``, ``nats-3``..."""
    return "nats" if index == 1 else f"nats-{index}"


@dataclass(frozen=True)
class NatsCluster:
    """The cluster a node belongs to: how many nodes, and the first route port (node ``i`` listens on
    ``route_port + i - 1`` for the others)."""

    size: int
    route_port: int

    def routes(self) -> list[str]:
        return [f"nats-route://{HOST}:{self.route_port + i}" for i in range(self.size)]


class Nats(Component):
    name = "nats"

    def __init__(
        self,
        state: StateDir,
        port: int,
        monitor_port: int,
        *,
        sync_interval: str = DEFAULT_SYNC_INTERVAL,
        authorization: bool = True,
        cluster: NatsCluster | None = None,
        node: int = 1,
    ) -> None:
        """``authorization=False``: no users, any local client may connect (a bare server for a
        library's own tests; never for a stack that runs the services). ``cluster``: this server is
        node ``node`` of that cluster; ``port`` and ``monitor_port`` are this node's own."""
        super().__init__(state)
        self.name = node_name(node)
        self.port = port
        self.monitor_port = monitor_port
        self.sync_interval = sync_interval
        self.authorization = authorization
        self.cluster = cluster
        self.node = node
        self.users = NatsUsers(state.nats_users_file)

    @property
    def store_dir(self) -> str:
        if self.cluster is None:
            return str(self.state.data("nats"))
        return str(self.state.data("nats-cluster") / self.name)

    @property
    def config_file(self) -> Path:
        if self.cluster is None or self.node == 1:
            return self.state.nats_config_file
        return self.state.root / f"{self.name}.conf"

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{HOST}:{self.monitor_port}"

    @property
    def route_port(self) -> int | None:
        return None if self.cluster is None else self.cluster.route_port + self.node - 1

    def port_claims(self) -> list[PortClaim]:
        claims = [
            PortClaim(self.port, "CORRAL_NATS_PORT"),
            PortClaim(self.monitor_port, "CORRAL_NATS_MONITOR_PORT"),
        ]
        if self.route_port is not None:
            claims.append(PortClaim(self.route_port, "CORRAL_NATS_CLUSTER_PORT"))
        return claims

    def marker(self) -> str:
        return self.store_dir

    def describe(self) -> str:
        routes = "" if self.route_port is None else f", routes {self.route_port}"
        return f"port {self.port} (monitor {self.monitor_port}{routes})"

    def config(self) -> dict[str, object]:
        """The server config (NATS reads JSON): JetStream's durability, the users, and in a cluster
        the node's name and its routes to every node (its own is ignored)."""
        config: dict[str, object] = {
            "jetstream": {"sync_interval": self.sync_interval},  # the store dir is on the command line
        }
        if self.cluster is not None:
            config["server_name"] = self.name
            config["cluster"] = {
                "name": CLUSTER_NAME,
                "listen": f"{HOST}:{self.route_port}",
                "routes": self.cluster.routes(),
            }
        if self.authorization:
            config["accounts"] = accounts(self.users)
        return config

    def launch(self) -> None:
        self.state.root.mkdir(parents=True, exist_ok=True)
        write_private(self.config_file, json.dumps(self.config(), indent=2) + "\n")
        if self.authorization:
            move_global_store(Path(self.store_dir))
        argv = [
            find_binary("nats-server"),
            "-c",
            str(self.config_file),
            "-js",
            "-a",
            HOST,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-sd",
            self.store_dir,
        ]
        processes.spawn(argv, env=process_environment(), log_path=self.log_file, pid_path=self.pid_file)

    def healthy(self) -> bool:
        return http_status(f"{self.monitor_url}/healthz?js-enabled-only=true") == 200

    def meta_leader(self) -> str | None:
        """The JetStream meta leader this node knows of (a cluster has one once a quorum of its nodes
        is up); ``None`` when it knows none, or does not answer."""
        response = http("GET", f"{self.monitor_url}/jsz")
        if response is None or response.status != 200:
            return None
        leader = (response.json().get("meta_cluster") or {}).get("leader")
        return str(leader) if leader else None

    @property
    def waits_for_leader(self) -> bool:
        """The last node of a cluster (nodes start in order): a new cluster elects its first meta
        leader only once it has seen every node, so earlier ones cannot wait for it."""
        return self.cluster is not None and self.node == self.cluster.size

    def ready(self) -> bool:
        """JetStream is on; on a cluster's last node, a meta leader is elected too, so streams can be
        created."""
        if not self.healthy():
            return False
        return not self.waits_for_leader or self.meta_leader() is not None

    def wait_ready(self, deadline: float) -> None:
        what = f"GET {self.monitor_url}/healthz?js-enabled-only=true never returned 200"
        if self.waits_for_leader:
            what += f", or the cluster elected no JetStream meta leader (GET {self.monitor_url}/jsz)"
        self.poll_until(lambda: True if self.ready() else None, deadline=deadline, what=what)


def nats_nodes(state: StateDir, ports: Ports, size: int, sync_interval: str) -> list[Nats]:
    """The ``size`` NATS servers of a stack on ``ports`` (one: a single server, no cluster), node 1 first."""
    cluster = NatsCluster(size, ports.nats_cluster) if size > 1 else None
    return [
        Nats(
            state,
            ports.nats + index,
            ports.nats_monitor + index,
            sync_interval=sync_interval,
            cluster=cluster,
            node=index + 1,
        )
        for index in range(size)
    ]
