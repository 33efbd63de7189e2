"""CPU time and memory of a local stack's processes, read from /proc (CPU time is steadier than wall
time on a shared machine): for the benches, which run on a private ``corral.devstack`` stack.

Each component counts with its descendants (Postgres runs a backend per connection), the live ones
and, through the kernel's ``cutime``/``cstime``, the ones that exited and were waited for.
"""

from __future__ import annotations

import os
from pathlib import Path

from corral.devstack.stack import Stack

_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def _process_table() -> tuple[dict[int, list[int]], dict[int, int]]:
    """Every live process's children and its own + waited-for children's CPU in clock ticks."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # the process ended while we looked
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        ticks[pid] = sum(int(f) for f in fields[11:15])
    return children, ticks


def _tree(children: dict[int, list[int]], pid: int) -> set[int]:
    tree, todo = set(), [pid]
    while todo:
        tree.add(current := todo.pop())
        todo.extend(children.get(current, []))
    return tree


def cpu_ms(stack: Stack) -> dict[str, float]:
    """CPU time (user + system, ms) each running component of the stack has used so far."""
    children, ticks = _process_table()
    used: dict[str, float] = {}
    for component in stack.components():
        pid = stack.pid(component.name)
        if pid is not None:
            used[component.name] = sum(ticks.get(p, 0) for p in _tree(children, pid)) * _TICK_MS
    return used


def spent(before: dict[str, float], after: dict[str, float], prefix: str = "") -> float:
    """CPU ms the components named ``prefix``... used between two ``cpu_ms`` readings (a process
    restarted meanwhile counts from zero)."""
    total = 0.0
    for name, value in after.items():
        if name.startswith(prefix):
            total += value - before.get(name, 0.0) if value >= before.get(name, 0.0) else value
    return total


def per_op(before: dict[str, float], after: dict[str, float], ops: int) -> dict[str, float]:
    """CPU ms per operation of each component between two ``cpu_ms`` readings."""
    return {name: spent(before, {name: value}) / max(1, ops) for name, value in after.items()}


def memory_kb(pid: int) -> int:
    """Proportional set size (KB) of ``pid`` and its descendants (shared pages split among sharers,
    so a Postgres tree is not counted once per backend); the RSS where PSS is not readable."""
    children, _ticks = _process_table()
    total = 0
    for p in _tree(children, pid):
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
            key = "Pss:"
        except OSError:
            try:
                text = Path(f"/proc/{p}/status").read_text()
            except OSError:
                continue
            key = "VmRSS:"
        for row in text.splitlines():
            if row.startswith(key):
                total += int(row.split()[1])
                break
    return total


def stack_memory_kb(stack: Stack) -> dict[str, int]:
    return {c.name: memory_kb(pid) for c in stack.components() if (pid := stack.pid(c.name)) is not None}


def own_cpu_ms() -> float:
    """CPU time of this (the benchmark's) process so far."""
    times = os.times()
    return (times.user + times.system) * 1000
