"""Checks on a tool's input, with errors the model can act on."""

from __future__ import annotations

import os
from typing import Any

from .protocol import ToolError


def path(root: str, args: dict[str, Any], key: str, *, required: bool = True) -> str:
    """``args[key]`` as a normalised path, relative paths taken from ``root`` (``root`` when optional and absent)."""
    value = args.get(key)
    if value is None and not required:
        return root
    if not isinstance(value, str) or not value:
        raise ToolError(f"{key} must be a non-empty string")
    if "\x00" in value:
        raise ToolError(f"{key} must not contain NUL characters")
    return os.path.normpath(os.path.join(root, value))


def text(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise ToolError(f"{key} must be a string")
    return value
