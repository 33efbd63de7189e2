"""What a service's composition root is given: the stop event, an exit stack, a task group, readiness."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger("corral.runner")


class Refused(Exception):
    """The service will not start, for a reason its operator can fix: one line, then this exit status.

    The message says what is wrong and what to change (``2``: configuration, like a settings error).
    """

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Lifetime:
    """One run of a service, from the runner to its composition root.

    - ``stop``: set by SIGTERM/SIGINT (or the caller); whatever waits for work waits on it too;
    - ``stack``: closed after every task has ended, last in first out (connections, servers);
    - ``tasks``: the service's long-running tasks; the run ends when they all have, after ``stop``
      (a task that fails ends the run, the others are cancelled);
    - ``background(coro)``: a task that runs until ``stop`` and is then cancelled (a watcher, a refill
      loop: nothing to finish);
    - ``ready(**fields)``: call once the service can really serve what it is asked (not merely once it
      listens); the runner logs it and sets ``is_ready``.
    """

    def __init__(
        self,
        name: str,
        stop: asyncio.Event,
        stack: contextlib.AsyncExitStack,
        tasks: asyncio.TaskGroup,
        is_ready: asyncio.Event,
    ) -> None:
        self.name = name
        self.stop = stop
        self.stack = stack
        self.tasks = tasks
        self.is_ready = is_ready
        self._background: list[asyncio.Task[Any]] = []

    def background(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the task group until ``stop``, then cancel it."""
        task = self.tasks.create_task(coro, name=name)
        self._background.append(task)
        return task

    def ready(self, **fields: object) -> None:
        if self.is_ready.is_set():
            return
        logger.info("%s ready", self.name, extra={"fields": {"service": self.name, **fields}})
        self.is_ready.set()

    def cancel_background(self) -> None:
        for task in self._background:
            task.cancel()
