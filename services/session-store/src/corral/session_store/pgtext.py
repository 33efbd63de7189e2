"""How text that may hold any Unicode goes into Postgres, and comes back unchanged.

Postgres text cannot hold U+0000, and neither jsonb nor json accepts lone surrogates; the log can
hold both (a NUL in a user message, an agent's name, the binary output of a tool). So:

- a body (the API object or event a row projects) is stored as JSON text: ``json.dumps`` escapes
  every control character (NUL becomes ``\\u0000``), and a body with lone surrogates is written
  with every non-ASCII character escaped, so the text is always valid UTF-8 with no NUL;
- a key column that holds user text (an environment's name, for uniqueness) is stored through
  :func:`key`, an injective escape of backslash, NUL and lone surrogates, so equal names are equal
  keys and different names are different keys.
"""

from __future__ import annotations

import json
import re
from typing import Any

_KEY_SPECIALS = re.compile("[\\\\\x00\ud800-\udfff]")


def dump(body: Any) -> str:
    """``body`` as JSON text Postgres can store (no NUL, valid UTF-8)."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: escape it (and every other non-ASCII character)
        text = json.dumps(body, separators=(",", ":"))
    return text


def load(text: str) -> Any:
    """The body :func:`dump` stored."""
    return json.loads(text)


def key(text: str) -> str:
    """``text`` escaped for a text key column: ``\\`` → ``\\\\``, NUL → ``\\0``, a lone surrogate →
    ``\\uXXXX``. Injective, so uniqueness and equality mean what they mean on the original."""
    return _KEY_SPECIALS.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\\":
        return "\\\\"
    if char == "\x00":
        return "\\0"
    return f"\\u{ord(char):04x}"
