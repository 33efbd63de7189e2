"""Doublestar glob patterns as regular expressions, and the directory walk the searches share."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from .cancellation import Call

#: A path segment with any of these is a pattern, not a fixed directory name.
MAGIC = re.compile(r"[*?\[{]")


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


def walk(base: str, call: Call, *, max_depth: int | None, skip_git: bool) -> Iterator[str]:
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
