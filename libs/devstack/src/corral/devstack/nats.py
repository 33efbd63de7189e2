"""NATS JetStream: ``nats-server -js`` with its store under ``data/nats``."""

from __future__ import annotations

import os

from corral.devstack import processes
from corral.devstack.components import Component, PortClaim, find_binary
from corral.devstack.ports import HOST
from corral.devstack.probes import http_status
from corral.devstack.state import StateDir


class Nats(Component):
    name = "nats"

    def __init__(self, state: StateDir, port: int, monitor_port: int) -> None:
        super().__init__(state)
        self.port = port
        self.monitor_port = monitor_port

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

    def launch(self) -> None:
        argv = [
            find_binary("nats-server"),
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
        processes.spawn(argv, env=dict(os.environ), log_path=self.log_file, pid_path=self.pid_file)

    def healthy(self) -> bool:
        return http_status(f"{self.monitor_url}/healthz?js-enabled-only=true") == 200

    def wait_ready(self, deadline: float) -> None:
        self.poll_until(
            lambda: True if self.healthy() else None,
            deadline=deadline,
            what=f"GET {self.monitor_url}/healthz?js-enabled-only=true never returned 200",
        )
