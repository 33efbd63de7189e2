"""PID 1's job: reap orphans and forward signals, while a forked child runs the agent."""

from __future__ import annotations

import os
import signal


def become_init_reaper() -> None:
    """As PID 1, fork: the parent reaps every orphan and forwards signals; the child returns."""
    child = os.fork()
    if child == 0:
        return

    def forward(signum: int, _frame: object) -> None:
        os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
