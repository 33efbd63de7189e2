"""The ``glob`` and ``grep`` tools."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from typing import Any

from . import arguments
from .cancellation import Call
from .globbing import MAGIC, glob_regex, walk
from .protocol import Result, ToolError
from .text import BINARY_SNIFF_BYTES, looks_binary

#: At most this many paths or matching lines are listed.
MAX_MATCHES = 1000
#: Longer matching lines are cut in what ``grep`` returns.
MAX_LINE_CHARS = 500
#: ``grep`` skips larger files.
MAX_GREP_FILE_BYTES = 20 * 1024 * 1024


def glob(args: dict[str, Any], root: str, call: Call) -> Result:
    pattern = arguments.text(args, "pattern")
    if not pattern:
        raise ToolError("pattern must be a non-empty string")
    base = arguments.path(root, args, "path", required=False)
    full = pattern if pattern.startswith("/") else base.rstrip("/") + "/" + pattern
    segments = full.split("/")
    fixed = 0
    while fixed < len(segments) - 1 and not MAGIC.search(segments[fixed]):
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
    for path in walk(start, call, max_depth=max_depth, skip_git=".git" not in pattern):
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


def grep(args: dict[str, Any], root: str, call: Call) -> Result:
    pattern = arguments.text(args, "pattern")
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ToolError(f"invalid regular expression {pattern!r}: {exc}") from None
    base = arguments.path(root, args, "path", required=False)
    if os.path.isfile(base):
        files: Iterator[str] = iter([base])
    elif os.path.isdir(base):
        files = walk(base, call, max_depth=None, skip_git=True)
    else:
        raise ToolError(f"{base} does not exist")
    out: list[str] = []
    more = 0
    for path in files:
        for lineno, line in text_lines(path):
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


def text_lines(path: str) -> Iterator[tuple[int, str]]:
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
