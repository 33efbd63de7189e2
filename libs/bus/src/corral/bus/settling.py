"""Making a stream or bucket on a NATS cluster while a sibling makes it too (two replicas of a service
starting together): the one whose creation lost, or whose server does not show the new stream yet
("stream not found"), or whose JetStream request is not answered in time while the stream's leader is
elected, looks again for up to ``SETTLE_S`` instead of failing its start-up."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from nats import errors as nats_errors
from nats.js import errors as js_errors

T = TypeVar("T")

#: How long an owner keeps looking for what it (or a sibling) has just made.
SETTLE_S: Final = 15.0
_FIRST_PAUSE_S: Final = 0.05
_MAX_PAUSE_S: Final = 1.0


async def find_or_make(
    find: Callable[[], Awaitable[T]], make: Callable[[], Awaitable[object]], *, missing: type[Exception]
) -> T:
    """``find()``; when it raises ``missing`` (or times out), ``make()`` (a sibling's concurrent
    creation, a ``BadRequestError``, is fine) and find again, until ``SETTLE_S`` has passed."""
    deadline = time.monotonic() + SETTLE_S
    pause = 0.0  # the first look after making it is at once
    while True:
        try:
            return await find()
        except (missing, nats_errors.TimeoutError):
            if time.monotonic() >= deadline:
                raise
        with contextlib.suppress(js_errors.BadRequestError, nats_errors.TimeoutError):  # made by a sibling
            await make()
        await asyncio.sleep(pause)  # the cluster has not settled on it yet: ask again in a moment
        pause = min(max(pause * 2, _FIRST_PAUSE_S), _MAX_PAUSE_S)


async def patiently(step: Callable[[], Awaitable[T]]) -> T:
    """``step`` (idempotent), again while JetStream does not answer it in time, for up to ``SETTLE_S``
    (a stream just made or changed can leave the next request about it unanswered for a moment)."""
    deadline = time.monotonic() + SETTLE_S
    pause = _FIRST_PAUSE_S
    while True:
        try:
            return await step()
        except nats_errors.TimeoutError:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(pause)  # the cluster has not settled yet: ask again in a moment
        pause = min(pause * 2, _MAX_PAUSE_S)
