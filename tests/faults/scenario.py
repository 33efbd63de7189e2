"""One fault run: start the clients, let every session finish a turn, inject the faults while turns
run, let every session finish another turn, stop, wait for quiescence, observe, check, report.

``run`` takes the faults as a schedule (an async iterator asking for the next fault once the stack
has made progress since the last), so named scenarios and the seeded soak share everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from corral.devstack.stack import Stack
from tests.faults.checker import Verdict, check
from tests.faults.history import History
from tests.faults.nemesis import ALL_FAULTS, RESTART_TIMEOUT_S, Fault, every_replica_ready, inject
from tests.faults.observe import observe
from tests.faults.workload import Workload
from tests.waiting import eventually

#: Sessions (one client each) in a run.
CLIENTS: Final = 3
#: Liveness bounds: the first turns (sandboxes provisioned), the turns after a fault, quiescence.
WARM_UP_S: Final = 120.0
PROGRESS_S: Final = 90.0
QUIESCE_S: Final = 30.0


@dataclass
class Outcome:
    verdict: Verdict
    history: History
    lines: list[str]

    def report(self) -> str:
        return "\n".join([*self.lines, f"verdict: {self.verdict.summary()}"])


Schedule = Callable[[], AsyncIterator[Fault]]


def once(*faults: Fault) -> Schedule:
    async def schedule() -> AsyncIterator[Fault]:
        for fault in faults:
            yield fault

    return schedule


def seeded(seed: int, seconds: float, faults: Sequence[Fault] = ALL_FAULTS) -> Schedule:
    """Faults picked at random (``seed``) from ``faults`` until ``seconds`` have passed."""

    async def schedule() -> AsyncIterator[Fault]:
        rng = random.Random(seed)
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            yield rng.choice(faults)

    return schedule


async def run(stack: Stack, schedule: Schedule, *, dump_to: Path) -> Outcome:
    history = History()
    lines: list[str] = []
    # whole again (a no-op when it is): a run that failed mid-fault leaves no component down for the next
    await asyncio.to_thread(stack.start, RESTART_TIMEOUT_S)
    await every_replica_ready(stack, RESTART_TIMEOUT_S)
    async with Workload.open(stack, history, CLIENTS) as work:
        async with asyncio.TaskGroup() as group:
            clients = group.create_task(work.run())
            await progress(work, clients, len(work.sessions), WARM_UP_S)
            async for fault in schedule():
                began = history.now()
                probe = group.create_task(work.probe())
                name = await inject(stack, fault, history, work.sessions)
                await probe
                await progress(work, clients, work.turns_ended + len(work.sessions), PROGRESS_S)
                append = history.first_ok_after(began, "probe")
                # a turn whose tool call was answered with an error ("no sandbox-manager") is no recovery
                turn = history.first_ok_after(began, "turn", where=lambda op: not op.value.get("tool_errors"))
                lines.append(
                    f"{fault} ({name}): first append {_s(append)} after the fault, "
                    f"first new turn whose tool call ran ended {_s(turn)}"
                )
            work.stop()
        await quiesce(stack, work.all_sessions())
        verdict = check(history, await observe(stack, work.all_sessions()))
    if not verdict.ok:
        history.dump(dump_to)
        lines.append(f"history written to {dump_to}")
    return Outcome(verdict, history, lines)


async def progress(work: Workload, clients: asyncio.Task[None], count: int, timeout: float) -> None:
    """Wait until ``count`` turns have ended; a client that gave up ends the wait (the checker reports)."""
    waiting = asyncio.ensure_future(work.turns(count, timeout=timeout))
    await asyncio.wait([waiting, clients], return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():
        waiting.cancel()
    elif waiting.exception() is not None:
        raise AssertionError(f"fewer than {count} turns ended within {timeout:g} s") from waiting.exception()


async def quiesce(stack: Stack, sessions: list[str]) -> None:
    """Wait until Postgres has projected every session up to its log's last record."""

    async def caught_up() -> bool:
        seen = await observe(stack, sessions, sandboxes=False)
        return all(s in seen.projected and seen.projected[s].last_seq == row.last_seq for s, row in seen.folded.items())

    with contextlib.suppress(TimeoutError):  # the checker reports the difference
        await eventually(caught_up, timeout=QUIESCE_S, every=0.25)


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f} s"
