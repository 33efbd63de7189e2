"""CPU time of a local stack's processes, read from /proc (less noisy than wall time on a shared
machine): for the benches, which run on a private ``corral.devstack`` stack."""

from __future__ import annotations

import os
from pathlib import Path

from corral.devstack.stack import Stack

_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def cpu_ms(stack: Stack) -> dict[str, float]:
    """CPU time (user + system, ms) each running component of the stack has used so far."""
    used: dict[str, float] = {}
    for component in stack.components():
        pid = stack.pid(component.name)
        if pid is None:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[component.name] = (int(fields[11]) + int(fields[12])) * _TICK_MS
    return used


def spent(before: dict[str, float], after: dict[str, float], prefix: str = "") -> float:
    """CPU ms the components named ``prefix``... used between two ``cpu_ms`` readings (a process
    restarted meanwhile counts from zero)."""
    total = 0.0
    for name, value in after.items():
        if name.startswith(prefix):
            total += value - before.get(name, 0.0) if value >= before.get(name, 0.0) else value
    return total
