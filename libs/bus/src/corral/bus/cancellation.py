"""A cancelled caller never carries on with a reply.

nats-py waits for replies, acks and fetches with ``asyncio.wait_for``. On Python 3.11, when the
awaited reply and a cancellation of the waiting task land in the same step of the event loop,
``wait_for`` returns the reply and the cancellation is lost: the task goes on as if nobody had asked
it to stop (a watcher cancelled at the end of a turn then waits on its subscription forever, and the
turn never ends). ``honouring_cancel`` wraps each such await and raises the ``CancelledError`` that
was swallowed. A cancellation that was already pending before the call (cleanup in a ``finally``
after a cancel) is not raised again: that code asked for its result knowingly.

A call that makes something the caller must undo (a subscription: ``js.subscribe`` creates its
consumer with such a request, and a follow cancelled while it starts is the common case) passes
``undo``: what was made is undone before the cancellation is raised, so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def honouring_cancel(awaitable: Awaitable[T], *, undo: Callable[[T], Awaitable[object]] | None = None) -> T:
    """``await awaitable``; raise ``CancelledError`` if the task was cancelled while it waited, even
    when the awaited call returned a result instead of raising (after ``undo(result)``, if given; its
    own failure is not raised over the cancellation)."""
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    result = await awaitable
    if task is not None and task.cancelling() > before:
        if undo is not None:
            with contextlib.suppress(Exception):
                await undo(result)
        raise asyncio.CancelledError
    return result
