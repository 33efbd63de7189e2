"""The two consoles (what a command answers on stdout; errors and progress on stderr) and how an API
object is shown."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import yaml
from rich.console import Console

#: Piped output is not cut to a terminal's width: ids and tables stay whole for scripts.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 10_000)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def when(value: Any) -> str:
    """A timestamp to the second, in UTC as the API gives it."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value or "")[:19].replace("T", " ")


def as_dict(obj: Any) -> dict[str, Any]:
    """An SDK object as the API sent it (JSON types, API names, nothing the API did not send)."""
    if isinstance(obj, dict):
        return obj
    converted: dict[str, Any] = obj.to_dict(mode="json")
    return converted


def as_yaml(data: Any) -> str:
    """YAML in the API's field order, block style, multi-line strings as literal blocks."""

    class _Dumper(yaml.SafeDumper):
        pass

    def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _text)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
