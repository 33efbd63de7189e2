"""Waiting on a fact outside the test's process (another process's log, a container, a service's
health): poll the condition with a deadline. Nothing here waits on time alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, every: float = 0.05) -> None:
    """Wait until ``check()`` holds, at most ``timeout`` seconds (``TimeoutError`` then)."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 (the fact is outside this process: nothing to await)
            await asyncio.sleep(every)
