"""The persistent bash the ``bash`` tool runs commands in, one per sandbox."""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import threading
import time

from .cancellation import Call
from .output import Collector
from .protocol import POLL_S, Result, ToolError


def ansi_c_quote(text: str) -> str:
    """``text`` as a bash ``$'...'`` word on one line (NUL cannot be passed to bash and is dropped)."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\x00":
            continue
        elif ord(ch) < 32 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (not a zombie)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat_file:
                fields = stat_file.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


class Shell:
    """One bash process per sandbox: ``cd``, variables and functions survive between commands.

    Each command is sent on the shell's stdin as ``eval $'<command>' </dev/null`` followed by a
    ``printf`` of a random marker, the exit code and ``$PWD``; output is read until the marker. The
    command's own stdin is ``/dev/null``, so it cannot swallow the next command.
    """

    def __init__(self, root: str, output_limit: int) -> None:
        self.root = root
        self.output_limit = output_limit
        self.cwd = root
        self._proc: subprocess.Popen[bytes] | None = None
        self._token = ""
        self._lock = threading.Lock()
        self._leftover = b""

    def _start(self, cwd: str) -> None:
        self._token = f"__corral_end_{secrets.token_hex(8)}__"
        for attempt in range(50):  # forks fail while a fork bomb still holds the pids
            try:
                self._proc = subprocess.Popen(
                    ["bash", "--noprofile", "--norc"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=cwd if os.path.isdir(cwd) else self.root,
                    start_new_session=True,
                    bufsize=0,
                )
                break
            except BlockingIOError:
                time.sleep(0.02 * (attempt + 1))
        else:
            raise ToolError("could not start bash: the sandbox has no free process slots")
        self.cwd = cwd
        self._leftover = b""

    def start(self) -> None:
        with self._lock:
            if self._proc is None:
                self._start(self.root)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid
        give_up = time.monotonic() + 3.0
        while time.monotonic() < give_up:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                break
            if proc.poll() is None:
                try:
                    proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    continue
            if not _group_alive(pgid):
                break  # what is left are zombies, for PID 1 to reap
            time.sleep(0.005)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def close(self) -> None:
        with self._lock:
            self._kill()

    def restart(self) -> Result:
        with self._lock:
            self._kill()
            self._start(self.root)
        return Result(f"the shell was restarted: a fresh bash in {self.root}, earlier variables and functions are gone")

    def run(self, command: str, call: Call) -> Result:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._kill()
                self._start(self.cwd)
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            marker = f"\n{self._token} ".encode()
            script = (
                f"eval {ansi_c_quote(command)} </dev/null\n"
                f"builtin printf '\\n%s %s %s\\n' '{self._token}' \"$?\" \"$PWD\"\n"
            )
            collector = Collector(marker, self.output_limit)
            if self._leftover:
                collector.feed(self._leftover)
                self._leftover = b""
            try:
                proc.stdin.write(script.encode("utf-8", "replace"))
            except (BrokenPipeError, OSError):
                return self._ended(proc, collector)
            fd = proc.stdout.fileno()
            while True:
                stop = call.stopped()
                if stop is not None:
                    return self._stopped(stop, call, collector)
                remaining = call.deadline - time.monotonic()
                ready, _, _ = select.select([fd], [], [], max(0.0, min(POLL_S, remaining)))
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    return self._ended(proc, collector)
                if collector.feed(chunk):
                    break
            assert collector.status is not None
            code, cwd = collector.status
            self.cwd = cwd or self.cwd
            self._leftover = collector.rest
            text = collector.text()
            if code != 0:
                text += ("" if not text or text.endswith("\n") else "\n") + f"[exit code {code}]"
            return Result(text or "(no output)")

    def _stopped(self, why: str, call: Call, collector: Collector) -> Result:
        collector.flush()
        cwd = self.cwd
        self._kill()
        self._start(cwd)
        if why == "cancelled":
            note = "[cancelled: the command was stopped"
        else:
            note = f"[timed out after {call.timeout_s:g} s: the command was stopped"
        note += f"; the shell was restarted in {cwd}, earlier variables and functions are gone]"
        text = collector.text()
        return Result((text + ("\n" if text and not text.endswith("\n") else "")) + note, is_error=True)

    def _ended(self, proc: subprocess.Popen[bytes], collector: Collector) -> Result:
        collector.flush()
        try:
            code = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = -1
        self._kill()
        self.cwd = self.root
        text = collector.text()
        note = f"[the shell exited with code {code}; the next command starts a new shell in {self.root}]"
        return Result((text + ("\n" if text and not text.endswith("\n") else "")) + note, is_error=code != 0)
