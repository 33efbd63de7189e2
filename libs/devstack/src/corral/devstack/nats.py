"""NATS JetStream: ``nats-server -js`` with its store under ``data/nats``, its users and its durability.

The server reads ``nats.conf`` (0600, rewritten on each start): one user per service with its
allow lists, plus ``admin``, in the ``CORRAL`` account, and the read-only ``subscriber`` in
``SUBSCRIBERS`` (see ``corral.devstack.nats_users``), and JetStream's ``sync_interval``:
how often the store is flushed to disk (``CORRAL_NATS_SYNC_INTERVAL``, default ``always``).
"""

from __future__ import annotations

import json
from pathlib import Path

from corral.devstack import processes
from corral.devstack.components import Component, PortClaim, find_binary
from corral.devstack.configuration import DEFAULT_SYNC_INTERVAL, process_environment
from corral.devstack.nats_accounts import accounts, move_global_store
from corral.devstack.nats_users import NatsUsers
from corral.devstack.ports import HOST
from corral.devstack.probes import http_status
from corral.devstack.state import StateDir, write_private


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
    ) -> None:
        """``authorization=False``: no users, any local client may connect (a bare server for a
        library's own tests; never for a stack that runs the services)."""
        super().__init__(state)
        self.port = port
        self.monitor_port = monitor_port
        self.sync_interval = sync_interval
        self.authorization = authorization
        self.users = NatsUsers(state.nats_users_file)

    @property
    def store_dir(self) -> str:
        return str(self.state.data("nats"))

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{HOST}:{self.monitor_port}"

    def port_claims(self) -> list[PortClaim]:
        return [
            PortClaim(self.port, "CORRAL_NATS_PORT"),
            PortClaim(self.monitor_port, "CORRAL_NATS_MONITOR_PORT"),
        ]

    def marker(self) -> str:
        return self.store_dir

    def describe(self) -> str:
        return f"port {self.port} (monitor {self.monitor_port})"

    def config(self) -> dict[str, object]:
        """The server config (NATS reads JSON): JetStream's durability and the users."""
        config: dict[str, object] = {
            "jetstream": {"sync_interval": self.sync_interval},  # the store dir is on the command line
        }
        if self.authorization:
            config["accounts"] = accounts(self.users)
        return config

    def launch(self) -> None:
        self.state.root.mkdir(parents=True, exist_ok=True)
        write_private(self.state.nats_config_file, json.dumps(self.config(), indent=2) + "\n")
        if self.authorization:
            move_global_store(Path(self.store_dir))
        argv = [
            find_binary("nats-server"),
            "-c",
            str(self.state.nats_config_file),
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

    def wait_ready(self, deadline: float) -> None:
        self.poll_until(
            lambda: True if self.healthy() else None,
            deadline=deadline,
            what=f"GET {self.monitor_url}/healthz?js-enabled-only=true never returned 200",
        )
