"""The harness-kill soak: many sessions doing scripted tool turns through every gateway while one
harness (the holder of a turn's lease) is SIGKILLed and started again every ``every`` seconds; then
every client finishes one more turn, the stack quiesces, and the checker reads the whole history.

The acceptance criterion it runs (issue "Every service replicated"): three harness processes, 200
concurrent sessions, a kill every 10 s for two minutes: every turn completes, no side effect twice.

The kills run on an event loop of their own, in a thread: on the clients' loop (200 clients reading
their sessions' events) each kill waited behind the clients' work, and twelve kills "every 10 s" were
one every 50 to 230 s. Each kill's time is kept, so the report says how far the schedule held.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from corral.devstack.stack import Stack
from tests.faults.checker import Verdict, check
from tests.faults.history import History
from tests.faults.nemesis import Fault, inject
from tests.faults.observe import observe
from tests.faults.scenario import PROGRESS_S, WARM_UP_S, progress, quiesce
from tests.faults.workload import Workload


@dataclass(frozen=True)
class Kill:
    harness: str
    due: float
    """Seconds after the kills began at which the schedule wanted this kill."""
    at: float
    """Seconds after the kills began at which the SIGKILL was sent (its harness found, its lease read)."""


@dataclass
class SoakResult:
    verdict: Verdict
    kills: list[Kill]
    seconds: float
    given_up: int = 0
    """Clients that stopped early (a turn with no end within its deadline, a send refused): none, if
    every turn completed."""
    intervals: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.intervals = [b.at - a.at for a, b in zip(self.kills, self.kills[1:], strict=False)]

    @property
    def latest(self) -> float:
        """How far the latest kill came after its time in the schedule."""
        return max((kill.at - kill.due for kill in self.kills), default=0.0)

    def report(self) -> str:
        spacing = (
            f"between kills {min(self.intervals):.1f}..{max(self.intervals):.1f} s "
            f"(mean {sum(self.intervals) / len(self.intervals):.1f} s), latest {self.latest:.1f} s behind schedule"
            if self.intervals
            else "one kill or none"
        )
        killed = ", ".join(f"{kill.harness} at {kill.at:.1f} s" for kill in self.kills)
        return (
            f"{len(self.kills)} harness kills ({killed}); {spacing}; {self.given_up} clients gave up; "
            f"{self.seconds:.0f} s in all: {self.verdict.summary()}"
        )


async def soak(stack: Stack, *, sessions: int, seconds: float, every: float, dump_to: Path) -> SoakResult:
    history = History()
    # the first turns provision every session's sandbox at once: they get the warm-up's bound
    warm_up = WARM_UP_S + sessions
    began = time.monotonic()
    async with Workload.open(stack, history, sessions, warm_up_deadline=warm_up) as work:
        async with asyncio.TaskGroup() as group:
            clients = group.create_task(work.run())
            await progress(work, clients, len(work.sessions), warm_up)
            work.warmed()
            schedule = _kill_schedule(stack, history, list(work.sessions), seconds=seconds, every=every)
            kills = await asyncio.to_thread(asyncio.run, schedule)
            await progress(work, clients, work.turns_ended + len(work.sessions), PROGRESS_S + sessions)
            work.stop()
        await quiesce(stack, work.all_sessions())
        verdict = check(history, await observe(stack, work.all_sessions()))
    # a client stops after a turn with no end within its deadline, or a send refused
    given_up = sum(op.kind == "unknown" for op in history.completions("turn")) + sum(
        op.kind == "fail" for op in history.completions("send")
    )
    if not verdict.ok or given_up:
        history.dump(dump_to)
    return SoakResult(verdict, kills, time.monotonic() - began, given_up)


async def _kill_schedule(
    stack: Stack, history: History, sessions: list[str], *, seconds: float, every: float
) -> list[Kill]:
    """One kill per ``every`` seconds for ``seconds``, on the thread's own loop (``History.mark`` only
    appends, so the clients' loop and this one may both write the history)."""
    kills: list[Kill] = []
    start, start_h = time.monotonic(), history.now()  # a kill at the period's very end is in it
    due = every
    while due <= seconds:
        await asyncio.sleep(max(0.0, start + due - time.monotonic()))  # the schedule: one kill per period
        name = await inject(stack, Fault("kill", "harness"), history, sessions)
        killed = next(m.time for m in reversed(history.marks) if m.what == f"{name} killed")
        kills.append(Kill(name, due, killed - start_h))
        due += every
    return kills
