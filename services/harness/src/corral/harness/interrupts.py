"""Racing a step's work against the user's interrupt.

A model stream, a tool call and a retry's backoff all stop as soon as a ``user.interrupt`` is
logged during the step; ``unless_interrupted`` is that race, written once. Losing the lease needs no
race here: the run's task group cancels everything the run is doing at once.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable
from typing import Literal, TypeVar

_T = TypeVar("_T")


class Stop(enum.Enum):
    INTERRUPTED = "interrupted"
    """The work was cancelled because the interrupt came first."""


async def unless_interrupted(work: Awaitable[_T], interrupted: asyncio.Event) -> _T | Literal[Stop.INTERRUPTED]:
    """``work``'s result, or ``Stop.INTERRUPTED`` once ``interrupted`` is set, ``work`` cancelled and awaited.

    Work that finishes as the interrupt comes keeps its result; an exception of ``work`` is raised.
    Either way nothing is left running when this returns.
    """
    working = asyncio.ensure_future(work)
    stopping = asyncio.create_task(interrupted.wait())
    try:
        await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (working, stopping):
            task.cancel()
        await asyncio.gather(working, stopping, return_exceptions=True)
    if working.cancelled():
        return Stop.INTERRUPTED
    return working.result()
