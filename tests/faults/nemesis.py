"""The faults (Jepsen's "nemesis"): kill a component with SIGKILL and start it again, or pause it with
SIGSTOP and resume it with SIGCONT, by the pid the devstack keeps for it (``Stack.kill``).

Targets are component names of the devstack (``Stack.component``). ``harness`` means the harness
worker holding the lease of one of the workload's sessions (the one mid-turn), else ``harness-1``.
NATS targets are the next step (see README.md): they need the devstack's cluster mode, and
``Fault`` then only needs their component names and ``inject`` their restart (``_restart``).
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from corral.bus import Bus
from corral.contracts import subjects
from corral.devstack.stack import Stack
from tests.e2e.flows import LEASE_TTL_S
from tests.faults.history import History

#: The five services, by the name a scenario gives them.
SERVICES: Final = ("gateway", "session-store", "harness", "sandbox-manager", "credential-proxy")
#: Longer than the harness's lease (``LEASE_TTL_S``), so a paused lease holder loses its lease.
PAUSE_S: Final = float(LEASE_TTL_S) + 1.5
#: A restarted component is healthy again within this (a liveness bound, not a timing).
RESTART_TIMEOUT_S: Final = 120.0

Action = Literal["kill", "pause"]


@dataclass(frozen=True)
class Fault:
    action: Action
    target: str

    def __str__(self) -> str:
        return f"{'SIGKILL' if self.action == 'kill' else 'SIGSTOP'} {self.target}"


#: Every single-node fault the soak picks from.
ALL_FAULTS: Final = (
    *(Fault(action, service) for service in SERVICES for action in ("kill", "pause")),
    Fault("kill", "postgres"),
)


async def harness_of(stack: Stack, sessions: Iterable[str]) -> str:
    """The harness worker holding a lease of one of ``sessions`` (a turn in progress), else harness-1."""
    async with Bus.connect(stack.nats_settings(), name="fault-nemesis") as bus:
        bucket = await bus.bind_key_value(subjects.lease_spec(float(LEASE_TTL_S)))
        assert bucket is not None, "the session-store makes the lease bucket before it is ready"
        for session in sessions:
            entry = await bucket.get(session)
            if entry is not None:
                return str(json.loads(entry.value)["holder"])
    return "harness-1"


async def inject(stack: Stack, fault: Fault, history: History, sessions: Iterable[str]) -> str:
    """Apply ``fault`` and repair it (restart, or resume); the component's name. Marks the history."""
    name = await harness_of(stack, sessions) if fault.target == "harness" else fault.target
    history.mark(f"{fault} ({name}) begins")
    if fault.action == "kill":
        await asyncio.to_thread(stack.kill, name, signal.SIGKILL)
        history.mark(f"{name} killed")
        await _restart(stack, name)
    else:
        await asyncio.to_thread(stack.kill, name, signal.SIGSTOP)
        try:
            await asyncio.sleep(PAUSE_S)  # the fault's length: the process stays stopped this long
        finally:
            await asyncio.to_thread(stack.kill, name, signal.SIGCONT)
    history.mark(f"{fault} ({name}) repaired")
    return name


async def _restart(stack: Stack, name: str) -> None:
    if name == "postgres":
        await asyncio.to_thread(stack.start, RESTART_TIMEOUT_S)  # starts what is not running
    else:
        await asyncio.to_thread(stack.start_service, name, RESTART_TIMEOUT_S)
