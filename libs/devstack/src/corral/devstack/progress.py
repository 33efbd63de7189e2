"""How ``up`` says what it is doing: a line per finished step, and the long steps while they run.

A ``Progress`` is any ``Callable[[str], None]`` (a line: a step's outcome, with its elapsed
seconds). A reporter that can also show a running step has ``step(what)``, a context manager; the
stack wraps each long step (starting a component, building the sandbox image, waiting for health)
in ``step(progress, what)``, which does nothing for a plain callable. ``ConsoleProgress`` is the
one ``corral-dev`` prints with: a spinner with the running steps and their elapsed seconds on a
terminal (the finished lines scroll above it), plain timestamped lines otherwise (a step's start
too, so a log shows what a slow or stalled start was doing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Protocol, TextIO, runtime_checkable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.padding import Padding
from rich.spinner import Spinner

__all__ = ["ConsoleProgress", "Progress", "Steps", "step"]

Progress = Callable[[str], None]


@runtime_checkable
class Steps(Protocol):
    """A ``Progress`` that also shows a step while it runs."""

    def __call__(self, line: str) -> None: ...

    def step(self, what: str) -> AbstractContextManager[None]: ...


@contextmanager
def step(progress: Progress, what: str) -> Iterator[None]:
    """Show ``what`` while the block runs when ``progress`` can; the block reports its own outcome."""
    if isinstance(progress, Steps):
        with progress.step(what):
            yield
    else:
        yield


class _Running:
    def __init__(self, what: str, began: float) -> None:
        self.what = what
        self.began = began
        self.spinner = Spinner("dots")


class ConsoleProgress:
    """Lines to ``stream``; on a terminal (or ``live=True``) the running steps under a spinner."""

    def __init__(
        self,
        stream: TextIO,
        *,
        live: bool | None = None,
        indent: str = "  ",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.console = Console(
            file=stream, force_terminal=live, highlight=False, soft_wrap=True, markup=False, emoji=False
        )
        self.live = self.console.is_terminal
        self.indent = indent
        self.clock = clock
        self.wall = wall
        self._running: list[_Running] = []
        self._display: Live | None = None

    def __call__(self, line: str) -> None:
        if self.live:
            self.console.print(f"{self.indent}{line}")
        else:
            self._plain(line)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        running = _Running(what, self.clock())
        if not self.live:
            self._plain(f"{what} ...")
            yield
            return
        self._running.append(running)
        if self._display is None:
            self._display = Live(
                get_renderable=self._render, console=self.console, transient=True, refresh_per_second=8
            )
            self._display.start()
        try:
            yield
        finally:
            self._running.remove(running)
            if not self._running and self._display is not None:
                self._display.stop()
                self._display = None

    @property
    def running(self) -> list[str]:
        """The steps under the spinner now, oldest first."""
        return [running.what for running in self._running]

    def refresh(self) -> None:
        """Redraw the spinner now (it redraws itself eight times a second)."""
        if self._display is not None:
            self._display.refresh()

    def _plain(self, line: str) -> None:
        self.console.out(f"{self.indent}{self.wall():%H:%M:%S} {line}", highlight=False)

    def _render(self) -> RenderableType:
        now = self.clock()
        for running in self._running:
            running.spinner.update(text=f"{running.what} {now - running.began:.0f}s")
        return Padding(Group(*(running.spinner for running in list(self._running))), (0, 0, 0, len(self.indent)))
