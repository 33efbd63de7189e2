"""The ``read``, ``write`` and ``edit`` tools."""

from __future__ import annotations

import os
import stat
from typing import Any

from . import arguments
from .protocol import Result, ToolError
from .text import BINARY_SNIFF_BYTES, looks_binary

#: Longer lines are cut in what ``read`` returns.
MAX_READ_LINE_CHARS = 4000


def read(args: dict[str, Any], root: str, limit: int) -> Result:
    path = arguments.path(root, args, "file_path")
    start, end = view_range(args.get("view_range"))
    regular_file(path)
    lines: list[str] = []
    size = 0
    number = 0
    truncated_at: int | None = None
    try:
        with open(path, "rb") as raw:
            if looks_binary(raw.read(BINARY_SNIFF_BYTES)):
                raise ToolError(binary_message(path))
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
                    raise ToolError(binary_message(path)) from None
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


def view_range(value: object) -> tuple[int, int | None]:
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


def regular_file(path: str) -> os.stat_result:
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


def binary_message(path: str) -> str:
    size = os.path.getsize(path)
    return (
        f"{path} is a binary file ({size} bytes), not UTF-8 text; read only returns text. "
        "Inspect it with bash instead (for example: od -c FILE | head)"
    )


def write(args: dict[str, Any], root: str) -> Result:
    path = arguments.path(root, args, "file_path")
    content = arguments.text(args, "content")
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


def edit(args: dict[str, Any], root: str) -> Result:
    path = arguments.path(root, args, "file_path")
    old = arguments.text(args, "old_string")
    new = arguments.text(args, "new_string")
    replace_all = args.get("replace_all")
    if replace_all not in (None, True, False):
        raise ToolError("replace_all must be a boolean")
    if not old:
        raise ToolError("old_string must not be empty; use write to create or overwrite a whole file")
    if old == new:
        raise ToolError("old_string and new_string are the same; there is nothing to change")
    regular_file(path)
    try:
        with open(path, "rb") as raw:
            data = raw.read()
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc.strerror}") from None
    if looks_binary(data[:BINARY_SNIFF_BYTES]):
        raise ToolError(binary_message(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(binary_message(path)) from None
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
