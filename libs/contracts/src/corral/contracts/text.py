"""Text every part of Corral can carry: well-formed Unicode.

Python strings can hold lone surrogates (``json.loads('"\\ud800"')`` makes one), but UTF-8 cannot, so
a string holding one cannot be published on the bus, stored in the log or sent to a client. Text
from outside (a client's JSON, a model's reply) is checked or made well-formed at the edge with
these helpers; everything past the edge can rely on it. NUL and every other code point are fine.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")

#: What a lone surrogate becomes in :func:`well_formed` text.
REPLACEMENT = "\ufffd"


def has_lone_surrogate(value: Any) -> bool:
    """Whether ``value`` (a string, or JSON-like lists and dicts of them) holds a lone surrogate.

    In a Python string a surrogate pair is one code point, so any surrogate code point is lone."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_lone_surrogate(v) for v in value)
    return False


def well_formed(value: Any) -> Any:
    """``value`` with every lone surrogate replaced by U+FFFD (strings, lists and dicts, recursively)."""
    if isinstance(value, str):
        return _SURROGATE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {well_formed(k): well_formed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(well_formed(v) for v in value)
    return value
