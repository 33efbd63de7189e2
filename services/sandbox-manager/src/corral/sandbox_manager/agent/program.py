"""The exec agent: the entry process of every sandbox container, running the built-in toolset.

It is started as ``python3 -c <this file> <config json>`` (standard library only; the sandbox image
has python3 and bash) and talks JSON lines over its stdin and stdout, which the sandbox-manager
reaches through a Docker attach socket:

    request   {"id": 7, "tool": "bash", "input": {"command": "ls"}, "timeout_ms": 120000}
    response  {"id": 7, "content": [{"type": "text", "text": "..."}], "is_error": false}

Two requests are answered at once on the reading thread: ``ping`` (readiness) and ``cancel``
(``input.target`` names the request to stop, ``"*"`` stops every running request). The others run
on a fixed pool of worker threads, started before any tool runs, so the agent keeps answering when
a fork bomb has taken every pid.

When the environment allows network access, the container still has no network interface but
loopback: the agent relays TCP connections to ``127.0.0.1:<egress_port>`` (where ``HTTP_PROXY`` and
``HTTPS_PROXY`` point) to the egress proxy's unix socket mounted at ``egress_socket``, and the proxy
decides, per request, which hosts the session may reach. Nothing else leaves the container.

In build mode (``build_script`` in the config: an environment image's build container, run as root
with the same network ``none`` and the build's egress socket) it starts the same relay, runs the
script with ``bash -euo pipefail -c``, its output going straight to the container's stdout and
stderr, and exits with the script's exit code; nothing is read from stdin.

As PID 1 it forks: the parent stays PID 1 and only reaps orphans (zombies would otherwise fill the
pids limit) and forwards signals, and the child is the agent.

Only the agent writes to its stdout and stderr (the manager's stream): before anything else it makes
itself non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``, kept across the fork), so the tools, which run
as the same user, can neither open its descriptors through ``/proc/<pid>/fd`` nor ptrace it. The
tools never inherit them either: bash gets pipes of its own (stderr merged into stdout, read only
while a call runs and capped), each command's stdin is ``/dev/null``, and every other descriptor is
closed on exec. Its ``ping`` reply says whether the seal took (``sealed``).

Relative paths are relative to the workspace root (``/workspace``). Absolute paths are allowed: the
container is the boundary, not the tools.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import secrets
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

PROTOCOL = 1
BINARY_SNIFF_BYTES = 8192
MAX_MATCHES = 1000
MAX_LINE_CHARS = 500
MAX_READ_LINE_CHARS = 4000
MAX_GREP_FILE_BYTES = 20 * 1024 * 1024
POLL_S = 0.05


@dataclass(frozen=True)
class Config:
    root: str = "/workspace"
    output_limit: int = 100_000
    default_timeout_ms: int = 120_000
    max_timeout_ms: int = 600_000
    workers: int = 8
    egress_socket: str | None = None
    egress_port: int = 3128
    egress_connections: int = 64
    #: Build mode (an environment image's build container): run this script and exit with its code.
    build_script: str | None = None
    #: Variables added to the build script's environment (the proxy variables).
    build_environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    text: str
    is_error: bool = False


@dataclass
class Call:
    """One running request: its deadline and whether it was cancelled."""

    id: object
    deadline: float
    timeout_s: float = 0.0
    cancelled: threading.Event = field(default_factory=threading.Event)

    def stopped(self) -> str | None:
        if self.cancelled.is_set():
            return "cancelled"
        if time.monotonic() >= self.deadline:
            return "timeout"
        return None


class ToolError(Exception):
    """A tool failed in a way the model should read and can recover from."""


# --- text helpers ----------------------------------------------------------------------------------------
def clean(text: str) -> str:
    """Text that encodes as UTF-8 (lone surrogates from undecodable file names become U+FFFD)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def cap(text: str, limit: int) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return (
        data[:limit].decode("utf-8", "ignore")
        + f"\n[output truncated: {len(data)} bytes in all, only the first {limit} are shown]"
    )


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


def looks_binary(head: bytes) -> bool:
    return b"\x00" in head


# --- doublestar globs ----------------------------------------------------------------------------------------
_MAGIC = re.compile(r"[*?\[{]")


def _translate_segment(seg: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(seg):
        ch = seg[i]
        if ch == "*":
            while i + 1 < len(seg) and seg[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = seg.find("]", i + 2 if i + 1 < len(seg) and seg[i + 1] in "!^" else i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = seg[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif ch == "{":
            depth, j = 0, i
            while j < len(seg):
                if seg[j] == "{":
                    depth += 1
                elif seg[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= len(seg):
                out.append(re.escape(ch))
            else:
                options = _split_braces(seg[i + 1 : j])
                out.append("(?:" + "|".join(_translate_segment(o) for o in options) + ")")
                i = j
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _split_braces(body: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:k])
            start = k + 1
    parts.append(body[start:])
    return parts


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a doublestar pattern over ``/``-separated paths (``**`` spans directories)."""
    segments = pattern.split("/")
    last = len(segments) - 1
    out = []
    for i, seg in enumerate(segments):
        if seg == "**":
            out.append(".*" if i == last else "(?:[^/]*/)*")
        else:
            out.append(_translate_segment(seg) + ("" if i == last else "/"))
    return re.compile("".join(out), re.DOTALL)


def _walk(base: str, call: Call, *, max_depth: int | None, skip_git: bool) -> Iterator[str]:
    """Files under ``base`` (symlinks are not followed), until the call stops."""
    base_depth = base.rstrip("/").count("/")
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        if call.stopped():
            return
        if skip_git and ".git" in dirnames:
            dirnames.remove(".git")
        if max_depth is not None and dirpath.rstrip("/").count("/") - base_depth >= max_depth:
            dirnames[:] = []
        for name in filenames:
            yield os.path.join(dirpath, name)


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


# --- the persistent shell --------------------------------------------------------------------------------------
class _Collector:
    """Combined output of one command: head and tail kept within the limit, and the end marker found."""

    def __init__(self, marker: bytes, limit: int) -> None:
        self.marker = marker
        self.head_limit = limit - limit // 4
        self.tail_limit = limit // 4
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.window = bytearray()
        self.status: tuple[int, str] | None = None
        self.rest = b""

    def feed(self, chunk: bytes) -> bool:
        """Take output; ``True`` once the end marker and its line (exit code, cwd) arrived."""
        self.window += chunk
        at = self.window.find(self.marker)
        if at >= 0:
            end = self.window.find(b"\n", at + len(self.marker))
            if end < 0:
                return False
            self._emit(bytes(self.window[:at]))
            code, _, cwd = bytes(self.window[at + len(self.marker) : end]).decode("utf-8", "replace").partition(" ")
            self.status = (int(code) if code.strip().lstrip("-").isdigit() else -1, cwd)
            self.rest = bytes(self.window[end + 1 :])
            self.window = bytearray()
            return True
        keep = len(self.marker) - 1
        if len(self.window) > keep:
            self._emit(bytes(self.window[: len(self.window) - keep]))
            del self.window[: len(self.window) - keep]
        return False

    def flush(self) -> None:
        self._emit(bytes(self.window))
        self.window = bytearray()

    def _emit(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    def text(self) -> str:
        head = bytes(self.head).decode("utf-8", "replace")
        if self.total <= len(self.head) + len(self.tail):
            return head + bytes(self.tail).decode("utf-8", "replace")
        omitted = self.total - len(self.head) - len(self.tail)
        tail = bytes(self.tail).decode("utf-8", "ignore")
        return f"{head}\n[output truncated: {omitted} of {self.total} bytes omitted here]\n{tail}"


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
            collector = _Collector(marker, self.output_limit)
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

    def _stopped(self, why: str, call: Call, collector: _Collector) -> Result:
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

    def _ended(self, proc: subprocess.Popen[bytes], collector: _Collector) -> Result:
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


# --- the tools -------------------------------------------------------------------------------------------------
class Toolbox:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.root
        self.shell = Shell(config.root, config.output_limit)

    # dispatch
    def run(self, tool: str, args: object, call: Call) -> Result:
        handlers: dict[str, Callable[[dict[str, Any], Call], Result]] = {
            "bash": self.bash,
            "read": self.read,
            "write": self.write,
            "edit": self.edit,
            "glob": self.glob,
            "grep": self.grep,
        }
        handler = handlers.get(tool)
        if handler is None:
            return Result(f"unknown tool {tool!r}; this sandbox runs {', '.join(handlers)}", is_error=True)
        if not isinstance(args, dict):
            return Result(f"the input of {tool} must be an object", is_error=True)
        try:
            result = handler(args, call)
        except ToolError as exc:
            return Result(str(exc), is_error=True)
        except Exception as exc:
            return Result(f"{tool} failed: {type(exc).__name__}: {exc}", is_error=True)
        return Result(cap(clean(result.text), self.config.output_limit + 200), result.is_error)

    def path(self, args: dict[str, Any], key: str, *, required: bool = True) -> str:
        value = args.get(key)
        if value is None and not required:
            return self.root
        if not isinstance(value, str) or not value:
            raise ToolError(f"{key} must be a non-empty string")
        if "\x00" in value:
            raise ToolError(f"{key} must not contain NUL characters")
        return os.path.normpath(os.path.join(self.root, value))

    @staticmethod
    def _text_arg(args: dict[str, Any], key: str) -> str:
        value = args.get(key)
        if not isinstance(value, str):
            raise ToolError(f"{key} must be a string")
        return value

    # bash
    def bash(self, args: dict[str, Any], call: Call) -> Result:
        restart = args.get("restart")
        command = args.get("command")
        if restart not in (None, True, False):
            raise ToolError("restart must be a boolean")
        if restart:
            result = self.shell.restart()
            if command:
                return Result(result.text + "\n" + self.shell.run(str(command), call).text)
            return result
        if not isinstance(command, str) or not command.strip():
            raise ToolError("command must be a non-empty string (or set restart to true)")
        return self.shell.run(command, call)

    # read
    def read(self, args: dict[str, Any], _call: Call) -> Result:
        path = self.path(args, "file_path")
        start, end = self._view_range(args.get("view_range"))
        self._regular_file(path)
        limit = self.config.output_limit
        lines: list[str] = []
        size = 0
        number = 0
        truncated_at: int | None = None
        try:
            with open(path, "rb") as raw:
                if looks_binary(raw.read(BINARY_SNIFF_BYTES)):
                    raise ToolError(self._binary_message(path))
                raw.seek(0)
                for number, line_bytes in enumerate(raw, start=1):
                    if number < start:
                        continue
                    if end is not None and number > end:
                        number -= 1
                        break
                    try:
                        line = line_bytes.decode("utf-8").rstrip("\n").rstrip("\r")
                    except UnicodeDecodeError:
                        raise ToolError(self._binary_message(path)) from None
                    if len(line) > MAX_READ_LINE_CHARS:
                        line = line[:MAX_READ_LINE_CHARS] + f" [line truncated: {len(line)} characters in all]"
                    rendered = f"{number:6}\t{line}"
                    size += len(rendered) + 1
                    if size > limit:
                        truncated_at = number
                        break
                    lines.append(rendered)
        except OSError as exc:
            raise ToolError(f"cannot read {path}: {exc.strerror}") from None
        if number == 0:
            return Result(f"{path} is empty")
        if start > number:
            raise ToolError(f"view_range starts at line {start} but {path} has {number} lines")
        text = "\n".join(lines)
        if truncated_at is not None:
            text += (
                f"\n[output truncated before line {truncated_at}: the limit is {limit} bytes; "
                f"read further with view_range [{truncated_at}, ...]]"
            )
        return Result(text)

    @staticmethod
    def _view_range(value: object) -> tuple[int, int | None]:
        if value is None:
            return 1, None
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ToolError("view_range must be [start_line, end_line] (1-indexed; end_line <= 0 means to the end)")
        start, end = value
        if start < 1:
            raise ToolError("view_range start_line must be 1 or more")
        if end > 0 and end < start:
            raise ToolError(f"view_range end_line {end} is before start_line {start}")
        return start, (end if end > 0 else None)

    @staticmethod
    def _regular_file(path: str) -> os.stat_result:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ToolError(f"{path} does not exist") from None
        except OSError as exc:
            raise ToolError(f"cannot open {path}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise ToolError(f"{path} is a directory; list it with glob or bash")
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"{path} is not a regular file")
        return st

    @staticmethod
    def _binary_message(path: str) -> str:
        size = os.path.getsize(path)
        return (
            f"{path} is a binary file ({size} bytes), not UTF-8 text; read only returns text. "
            "Inspect it with bash instead (for example: od -c FILE | head)"
        )

    # write
    def write(self, args: dict[str, Any], _call: Call) -> Result:
        path = self.path(args, "file_path")
        content = self._text_arg(args, "content")
        data = content.encode("utf-8", "replace")
        try:
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            if os.path.isdir(path):
                raise ToolError(f"{path} is a directory")
            with open(path, "wb") as out:
                out.write(data)
        except OSError as exc:
            raise ToolError(f"cannot write {path}: {exc.strerror}") from None
        return Result(f"wrote {len(data)} bytes to {path}")

    # edit
    def edit(self, args: dict[str, Any], _call: Call) -> Result:
        path = self.path(args, "file_path")
        old = self._text_arg(args, "old_string")
        new = self._text_arg(args, "new_string")
        replace_all = args.get("replace_all")
        if replace_all not in (None, True, False):
            raise ToolError("replace_all must be a boolean")
        if not old:
            raise ToolError("old_string must not be empty; use write to create or overwrite a whole file")
        if old == new:
            raise ToolError("old_string and new_string are the same; there is nothing to change")
        self._regular_file(path)
        try:
            with open(path, "rb") as raw:
                data = raw.read()
        except OSError as exc:
            raise ToolError(f"cannot read {path}: {exc.strerror}") from None
        if looks_binary(data[:BINARY_SNIFF_BYTES]):
            raise ToolError(self._binary_message(path))
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ToolError(self._binary_message(path)) from None
        count = text.count(old)
        if count == 0:
            raise ToolError(
                f"old_string was not found in {path}; read the file to see its current content "
                "(whitespace and indentation must match exactly)"
            )
        if count > 1 and not replace_all:
            raise ToolError(
                f"old_string occurs {count} times in {path}; include more surrounding text to make it "
                "unique, or set replace_all to true to replace every occurrence"
            )
        updated = text.replace(old, new) if replace_all else text.replace(old, new, 1)
        try:
            with open(path, "wb") as out:
                out.write(updated.encode("utf-8"))
        except OSError as exc:
            raise ToolError(f"cannot write {path}: {exc.strerror}") from None
        replaced = count if replace_all else 1
        return Result(f"replaced {replaced} occurrence{'s' if replaced != 1 else ''} in {path}")

    # glob
    def glob(self, args: dict[str, Any], call: Call) -> Result:
        pattern = self._text_arg(args, "pattern")
        if not pattern:
            raise ToolError("pattern must be a non-empty string")
        base = self.path(args, "path", required=False)
        full = pattern if pattern.startswith("/") else base.rstrip("/") + "/" + pattern
        segments = full.split("/")
        fixed = 0
        while fixed < len(segments) - 1 and not _MAGIC.search(segments[fixed]):
            fixed += 1
        start = "/".join(segments[:fixed]) or "/"
        if not os.path.isdir(start):
            if not pattern.startswith("/") and not os.path.isdir(base):
                raise ToolError(f"{base} is not a directory")
            return Result(f"no files match {pattern} under {base}")
        rest = segments[fixed:]
        max_depth = None if "**" in rest else len(rest)
        regex = glob_regex(full)
        found: list[tuple[float, str]] = []
        for path in _walk(start, call, max_depth=max_depth, skip_git=".git" not in pattern):
            if regex.fullmatch(path):
                try:
                    found.append((os.lstat(path).st_mtime, path))
                except OSError:
                    continue
        found.sort(key=lambda item: (-item[0], item[1]))
        where = base if not pattern.startswith("/") else start
        if not found:
            return Result(f"no files match {pattern} under {where}")
        lines = [p for _, p in found[:MAX_MATCHES]]
        if len(found) > MAX_MATCHES:
            lines.append(f"[{len(found) - MAX_MATCHES} more files not shown; narrow the pattern]")
        if call.stopped():
            lines.append("[the search stopped before it finished: " + str(call.stopped()) + "]")
        return Result("\n".join(lines))

    # grep
    def grep(self, args: dict[str, Any], call: Call) -> Result:
        pattern = self._text_arg(args, "pattern")
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"invalid regular expression {pattern!r}: {exc}") from None
        base = self.path(args, "path", required=False)
        if os.path.isfile(base):
            files: Iterator[str] = iter([base])
        elif os.path.isdir(base):
            files = _walk(base, call, max_depth=None, skip_git=True)
        else:
            raise ToolError(f"{base} does not exist")
        out: list[str] = []
        more = 0
        for path in files:
            for lineno, line in self._text_lines(path):
                if regex.search(line):
                    if len(out) < MAX_MATCHES:
                        shown = line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " [line truncated]"
                        out.append(f"{path}:{lineno}:{shown}")
                    else:
                        more += 1
            if call.stopped():
                out.append("[the search stopped before it finished: " + str(call.stopped()) + "]")
                break
        if not out:
            return Result(f"no matches for {pattern!r} under {base}")
        if more:
            out.append(f"[{more} more matching lines not shown; narrow the pattern or the path]")
        return Result("\n".join(out))

    @staticmethod
    def _text_lines(path: str) -> Iterator[tuple[int, str]]:
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_GREP_FILE_BYTES:
                return
            with open(path, "rb") as raw:
                if looks_binary(raw.read(BINARY_SNIFF_BYTES)):
                    return
                raw.seek(0)
                for lineno, line_bytes in enumerate(raw, start=1):
                    yield lineno, line_bytes.decode("utf-8", "replace").rstrip("\n").rstrip("\r")
        except OSError:
            return


# --- the wire ----------------------------------------------------------------------------------------------------
class Server:
    def __init__(self, toolbox: Toolbox, reader: Any, writer: Any, *, sealed: bool = False) -> None:
        self.toolbox = toolbox
        self.sealed = sealed
        self.reader = reader
        self.writer = writer
        self.work: queue.Queue[tuple[dict[str, Any], Call]] = queue.Queue()
        self.calls: dict[str, Call] = {}
        self.calls_lock = threading.Lock()
        self.write_lock = threading.Lock()

    def reply(self, request_id: object, result: Result, **extra: object) -> None:
        body = {
            "id": request_id,
            # capped again here: every reply fits the manager's frame limit, whatever produced it
            "content": [{"type": "text", "text": cap(clean(result.text), self.toolbox.config.output_limit + 200)}],
            "is_error": result.is_error,
            **extra,
        }
        line = json.dumps(body, ensure_ascii=False).encode("utf-8") + b"\n"
        with self.write_lock:
            self.writer.write(line)
            self.writer.flush()

    def timeout_s(self, value: object) -> float:
        config = self.toolbox.config
        ms = (
            value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else config.default_timeout_ms
        )
        return min(ms, config.max_timeout_ms) / 1000

    def worker(self) -> None:
        while True:
            request, call = self.work.get()
            try:
                result = self.toolbox.run(str(request.get("tool")), request.get("input", {}), call)
            except Exception as exc:
                result = Result(f"the exec agent failed: {type(exc).__name__}: {exc}", is_error=True)
            with self.calls_lock:
                self.calls.pop(str(request.get("id")), None)
            self.reply(request.get("id"), result)

    def serve(self) -> None:
        for _ in range(self.toolbox.config.workers):
            threading.Thread(target=self.worker, daemon=True).start()
        self.toolbox.shell.start()
        for line in self.reader:
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
            except ValueError as exc:
                self.reply(None, Result(f"unreadable request: {exc}", is_error=True))
                continue
            tool = request.get("tool")
            request_id = request.get("id")
            if tool == "ping":
                self.reply(request_id, Result("pong"), protocol=PROTOCOL, pid=os.getpid(), sealed=self.sealed)
            elif tool == "cancel":
                target = str((request.get("input") or {}).get("target"))
                with self.calls_lock:
                    running = list(self.calls.values()) if target == "*" else [self.calls.get(target)]
                stopped = [call for call in running if call is not None]
                for call in stopped:
                    call.cancelled.set()
                self.reply(request_id, Result("cancelled" if stopped else "not running"))
            else:
                budget = self.timeout_s(request.get("timeout_ms"))
                call = Call(request_id, time.monotonic() + budget, budget)
                with self.calls_lock:
                    self.calls[str(request_id)] = call
                self.work.put((request, call))


class EgressRelay:
    """Relays each TCP connection to ``127.0.0.1:port`` to the egress proxy's unix socket.

    The listening thread is started with the agent (before any tool runs); each connection gets two
    pumping threads, and at most ``limit`` connections are relayed at once (more wait in the backlog).
    """

    def __init__(self, socket_path: str, port: int, limit: int) -> None:
        self.socket_path = socket_path
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(128)
        self.slots = threading.BoundedSemaphore(limit)

    def start(self) -> None:
        threading.Thread(target=self.accept_forever, daemon=True).start()

    def accept_forever(self) -> None:
        while True:
            self.slots.acquire()
            try:
                client, _ = self.listener.accept()
            except OSError:
                self.slots.release()
                time.sleep(POLL_S)
                continue
            try:
                threading.Thread(target=self.relay, args=(client,), daemon=True).start()
            except RuntimeError:  # no thread to be had (the pids limit is reached): refuse this one
                client.close()
                self.slots.release()

    def relay(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.socket_path)
            back = threading.Thread(target=self.pump, args=(upstream, client), daemon=True)
            back.start()
            self.pump(client, upstream)
            back.join()
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()
            self.slots.release()

    @staticmethod
    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


PR_SET_DUMPABLE = 4


def seal() -> bool:
    """Make this process (and the children it forks, until they exec) non-dumpable: its ``/proc/<pid>``
    entries become root's and ptrace is refused, so a tool cannot reach the agent's stdin, stdout and
    stderr through ``/proc/<pid>/fd``. Whether it took."""
    try:
        import ctypes  # optional in a minimal python3; without it nothing is sealed

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (ImportError, OSError, AttributeError):
        return False


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


def run_build(config: Config) -> int:
    """Build mode: relay to the egress proxy (when mounted), run ``build_script`` with
    ``bash -euo pipefail -c`` as this process's user, its output going to this process's stdout and
    stderr; its exit code (128 + N when killed by signal N)."""
    if config.egress_socket:
        EgressRelay(config.egress_socket, config.egress_port, config.egress_connections).start()
    sys.stdout.flush()
    # The container's own environment (the base image's ENV), not configuration of this service.
    environment = {**os.environ, **config.build_environment}  # noqa: TID251
    code = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", config.build_script or ""],
        stdin=subprocess.DEVNULL,
        env=environment,
        cwd="/",
        check=False,
    ).returncode
    return code if code >= 0 else 128 - code


def main(argv: list[str]) -> None:
    raw = json.loads(argv[1]) if len(argv) > 1 else {}
    config = Config(**{k: v for k, v in raw.items() if k in Config.__dataclass_fields__})
    if config.build_script is not None:
        if os.getpid() == 1:
            become_init_reaper()
        sys.exit(run_build(config))
    sealed = seal()
    if os.getpid() == 1:
        become_init_reaper()
    os.makedirs(config.root, exist_ok=True)
    os.chdir(config.root)
    if config.egress_socket:
        EgressRelay(config.egress_socket, config.egress_port, config.egress_connections).start()
    Server(Toolbox(config), sys.stdin.buffer, sys.stdout.buffer, sealed=sealed).serve()


if __name__ == "__main__":
    main(sys.argv)
