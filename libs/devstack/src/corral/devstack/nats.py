"""NATS JetStream: ``nats-server -js`` with its store under ``data/nats``, its users and its durability.

The server reads ``nats.conf`` (0600, rewritten on each start): one user per service with its
allow lists, plus ``admin`` (see ``corral.devstack.nats_users``), and JetStream's ``sync_interval``:
how often the store is flushed to disk (``CORRAL_NATS_SYNC_INTERVAL``, default ``always``).
"""

from __future__ import annotations

import json
import os
import re

from corral.devstack import processes
from corral.devstack.components import Component, PortClaim, find_binary
from corral.devstack.errors import DevstackError
from corral.devstack.nats_users import NatsUsers
from corral.devstack.ports import HOST
from corral.devstack.probes import http_status
from corral.devstack.state import StateDir, write_private

SYNC_INTERVAL_VAR = "CORRAL_NATS_SYNC_INTERVAL"
#: fsync after every write: an acknowledged append survives a power loss or a kernel crash, at the
#: cost of one fsync per stored message. NATS's own default, ``2m``, survives a crash of nats-server
#: (the kernel still has the data) but can lose up to two minutes of acknowledged writes when the
#: machine goes down.
DEFAULT_SYNC_INTERVAL = "always"
_SYNC_INTERVAL = re.compile(r"^(always|[1-9][0-9]*(ms|s|m|h))$")


def sync_interval(raw: str | None) -> str:
    """``CORRAL_NATS_SYNC_INTERVAL``: ``always`` or a duration like ``500ms``, ``10s``, ``2m``."""
    value = (raw or "").strip() or DEFAULT_SYNC_INTERVAL
    if not _SYNC_INTERVAL.match(value):
        raise DevstackError(f"{SYNC_INTERVAL_VAR}={value!r} is not 'always' or a duration such as 500ms, 10s or 2m")
    return value


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
            config["authorization"] = self.users.authorization()
        return config

    def launch(self) -> None:
        self.state.root.mkdir(parents=True, exist_ok=True)
        write_private(self.state.nats_config_file, json.dumps(self.config(), indent=2) + "\n")
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
        processes.spawn(argv, env=dict(os.environ), log_path=self.log_file, pid_path=self.pid_file)

    def healthy(self) -> bool:
        return http_status(f"{self.monitor_url}/healthz?js-enabled-only=true") == 200

    def wait_ready(self, deadline: float) -> None:
        self.poll_until(
            lambda: True if self.healthy() else None,
            deadline=deadline,
            what=f"GET {self.monitor_url}/healthz?js-enabled-only=true never returned 200",
        )
