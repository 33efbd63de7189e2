"""Stopping processes by pid: each one's exit time is measured, a straggler is killed."""

from __future__ import annotations

import subprocess
import sys

from corral.devstack import processes

EXITS_ON_TERM = "import time\nprint('up', flush=True)\ntime.sleep(60)"
IGNORES_TERM = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)"
)


def started(code: str) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"up\n"  # its handler is in place
    return child


def test_each_pid_gets_its_own_exit_time_and_a_straggler_is_killed() -> None:
    prompt, stubborn = started(EXITS_ON_TERM), started(IGNORES_TERM)
    try:
        took = processes.terminate_timed([prompt.pid, stubborn.pid], timeout=2.0)
    finally:
        for child in (prompt, stubborn):
            child.kill()
            child.wait()
            assert child.stdout is not None
            child.stdout.close()
    seconds = took[prompt.pid]
    assert seconds is not None and seconds < 2.0
    assert took[stubborn.pid] is None  # killed after the timeout
    assert processes.terminate_all([prompt.pid], timeout=1.0) == []  # gone already: nothing to kill
