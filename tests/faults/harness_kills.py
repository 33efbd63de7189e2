"""The harness-kill soak: many sessions doing scripted tool turns through every gateway while one
harness (the holder of a turn's lease) is SIGKILLed and started again every ``every`` seconds; then
every client finishes one more turn, the stack quiesces, and the checker reads the whole history.

The acceptance criterion it runs (issue "Every service replicated"): three harness processes, 200
concurrent sessions, a kill every 10 s for two minutes: every turn completes, no side effect twice.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from corral.devstack.stack import Stack
from tests.faults.checker import Verdict, check
from tests.faults.history import History
from tests.faults.nemesis import Fault, inject
from tests.faults.observe import observe
from tests.faults.scenario import PROGRESS_S, WARM_UP_S, progress, quiesce
from tests.faults.workload import Workload


@dataclass
class SoakResult:
    verdict: Verdict
    kills: list[str]
    seconds: float

    def report(self) -> str:
        return f"{len(self.kills)} harness kills in {self.seconds:.0f} s ({', '.join(self.kills)}): " + (
            self.verdict.summary()
        )


async def soak(stack: Stack, *, sessions: int, seconds: float, every: float, dump_to: Path) -> SoakResult:
    history = History()
    kills: list[str] = []
    began = time.monotonic()
    async with Workload.open(stack, history, sessions) as work:
        async with asyncio.TaskGroup() as group:
            clients = group.create_task(work.run())
            await progress(work, clients, len(work.sessions), WARM_UP_S + sessions)
            start = time.monotonic()  # one clock reading: a kill at the period's very end is in it
            ends, next_kill = start + seconds, start + every
            while next_kill <= ends:
                await asyncio.sleep(max(0.0, next_kill - time.monotonic()))  # the schedule: one kill per period
                kills.append(await inject(stack, Fault("kill", "harness"), history, work.sessions))
                next_kill += every
            await progress(work, clients, work.turns_ended + len(work.sessions), PROGRESS_S + sessions)
            work.stop()
        await quiesce(stack, work.all_sessions())
        verdict = check(history, await observe(stack, work.all_sessions()))
    if not verdict.ok:
        history.dump(dump_to)
    return SoakResult(verdict, kills, time.monotonic() - began)
