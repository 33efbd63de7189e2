"""Spawning and stopping processes by pid, pid files and log files.

Processes are identified by the pid in their pid file *and* a marker string that must appear in
their command line (for example the data directory), so a recycled pid is never signalled.
Nothing here looks processes up by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

# Children spawned by this process, kept so their exit status is reaped (no zombies, and
# liveness of our own children is answered by ``poll``).
_children: dict[int, subprocess.Popen[bytes]] = {}

POLL_INTERVAL = 0.05


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    pid_path: Path,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` detached (own session) with stdout+stderr appended to ``log_path``.

    The process outlives the caller; its pid is written to ``pid_path`` and returned.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log_file.write(f"--- corral-dev {stamp}: {' '.join(argv)}\n".encode())
        log_file.flush()
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    _children[child.pid] = child
    write_pid_file(pid_path, child.pid)
    log.debug("spawned pid %d: %s", child.pid, argv)
    return child.pid


def write_pid_file(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


def read_pid_file(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    first = text.splitlines()[0] if text else ""
    try:
        return int(first)
    except ValueError:
        return None


def remove_pid_file(path: Path) -> None:
    path.unlink(missing_ok=True)


def _linux_info(pid: int) -> tuple[str, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw_cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except PermissionError:
        return ("?", "")
    state = stat.rsplit(")", 1)[-1].split()[0]
    cmdline = raw_cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return state, cmdline


def _ps_info(pid: int) -> tuple[str, str] | None:
    result = subprocess.run(
        ["ps", "-o", "stat=", "-o", "command=", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    )
    line = result.stdout.strip()
    if result.returncode != 0 or not line:
        return None
    state, _, cmdline = line.partition(" ")
    return state[:1], cmdline.strip()


def process_info(pid: int) -> tuple[str, str] | None:
    """(state letter, command line) of ``pid``, or None when there is no such process."""
    if sys.platform.startswith("linux"):
        return _linux_info(pid)
    return _ps_info(pid)


def is_alive(pid: int | None, marker: str | None = None) -> bool:
    """True when ``pid`` runs, is not a zombie, and its command line contains ``marker``."""
    if pid is None or pid <= 0:
        return False
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
            return False
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    info = process_info(pid)
    if info is None:
        return False
    state, cmdline = info
    if state == "Z":
        return False
    if marker is None or not cmdline:
        return True
    return marker in cmdline


def send_signal(pid: int, sig: int) -> bool:
    """Signal ``pid``; False when it no longer exists."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_exit(pid: int, deadline: float) -> bool:
    """Poll until ``pid`` has exited (reaping it when it is our child); True if it did."""
    while True:
        if not is_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        child = _children.get(pid)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=min(POLL_INTERVAL, max(deadline - time.monotonic(), 0)))
            continue
        time.sleep(POLL_INTERVAL)


def terminate_all(
    pids: Iterable[int],
    *,
    timeout: float = 10.0,
    sig: int = signal.SIGTERM,
) -> list[int]:
    """Send ``sig`` to every pid, wait up to ``timeout`` s in total, then SIGKILL stragglers.

    Returns the pids that had to be killed.
    """
    return [pid for pid, took in terminate_timed(pids, timeout=timeout, sig=sig).items() if took is None]


def terminate_timed(
    pids: Iterable[int],
    *,
    timeout: float = 10.0,
    sig: int = signal.SIGTERM,
) -> dict[int, float | None]:
    """Send ``sig`` to every pid, wait up to ``timeout`` s in total, then SIGKILL stragglers.

    Returns, for every pid that was running, the seconds it took to exit after ``sig`` (all are
    watched at once, to ``POLL_INTERVAL``), or ``None`` when it had to be killed.
    """
    started = time.monotonic()
    pending = [pid for pid in pids if send_signal(pid, sig)]
    deadline = started + timeout
    took: dict[int, float | None] = {}
    while pending:
        for pid in list(pending):
            if not is_alive(pid):
                took[pid] = time.monotonic() - started
                pending.remove(pid)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL)
    for pid in pending:
        log.warning("pid %d did not exit within %.0fs; sending SIGKILL", pid, timeout)
        send_signal(pid, signal.SIGKILL)
        took[pid] = None
    kill_deadline = time.monotonic() + 5.0
    for pid in pending:
        wait_exit(pid, kill_deadline)
    return took


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(size - 64 * 1024, 0))
            data = handle.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
