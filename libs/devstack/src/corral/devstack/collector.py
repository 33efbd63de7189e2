"""The trace collector component (``CORRAL_TRACING=1``): OTLP/HTTP on ``CORRAL_COLLECTOR_PORT``,
every export written to ``.corral/traces/spans.jsonl``, and forwarded to ``CORRAL_JAEGER_OTLP``
when that is set. See ``corral.devstack.trace_collector`` for the process itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

from corral.devstack import processes
from corral.devstack.components import Component, PortClaim
from corral.devstack.configuration import process_environment
from corral.devstack.ports import HOST
from corral.devstack.probes import http_status
from corral.devstack.state import StateDir

NAME = "collector"
MODULE = "corral.devstack.trace_collector"


class Collector(Component):
    name = NAME

    def __init__(self, state: StateDir, port: int, *, forward: str | None = None) -> None:
        super().__init__(state)
        self.port = port
        self.forward = forward

    @property
    def endpoint(self) -> str:
        """The OTLP/HTTP base URL the services export to (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def spans_file(self) -> Path:
        """The OTLP JSON lines the collector writes (one export request per line)."""
        return self.state.root / "traces" / "spans.jsonl"

    def port_claims(self) -> list[PortClaim]:
        return [PortClaim(self.port, "CORRAL_COLLECTOR_PORT")]

    def marker(self) -> str:
        return str(self.spans_file)

    def describe(self) -> str:
        where = f"port {self.port}, writing {self.spans_file}"
        return where + (f", forwarding to {self.forward}" if self.forward else "")

    def launch(self) -> None:
        argv = [sys.executable, "-m", MODULE, "--port", str(self.port), "--out", str(self.spans_file)]
        if self.forward:
            argv += ["--forward", self.forward]
        processes.spawn(argv, env=process_environment(), log_path=self.log_file, pid_path=self.pid_file)

    def wait_ready(self, deadline: float) -> None:
        self.poll_until(
            lambda: True if http_status(f"{self.endpoint}/") == 200 else None,
            deadline=deadline,
            what=f"GET {self.endpoint}/ never returned 200",
        )
