"""Work that takes a while, shown on stderr while it runs.

On a terminal: a spinner with the step and its elapsed time, gone once the step is done (the
command's answer says what came of it). Piped, or with ``--no-progress``: one plain line per
finished step with its duration (``creating environment dev: done in 0.2s``), for logs and scripts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress as Bar
from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

from corral.cli.output import err


class Progress:
    def __init__(
        self, console: Console = err, *, live: bool | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.clock = clock

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Show ``what`` while the block runs; a failing block leaves no line (its error is the line)."""
        began = self.clock()
        if self.live:
            columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
            with Bar(*columns, console=self.console, transient=True) as bar:
                bar.add_task(what, total=None)
                yield
            return
        yield
        self.console.print(f"{what}: done in {self.clock() - began:.1f}s", markup=False, highlight=False)
