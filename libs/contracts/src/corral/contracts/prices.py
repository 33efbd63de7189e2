"""Public list prices of models, in USD per million tokens, by model id prefix (longest prefix wins).

The one table: the harness measures session budgets with it (``corral.harness.pricing``, where the
operator can override it) and the gateway's console estimates a session's cost with it. Each entry
has ``input``, ``output``, ``cache_read`` (prompt-cache reads) and ``cache_write`` (prompt-cache
writes, at the 5-minute rate), as decimal strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final


def _entry(input: str, output: str, cache_read: str, cache_write: str) -> Mapping[str, str]:
    return {"input": input, "output": output, "cache_read": cache_read, "cache_write": cache_write}


LIST_PRICES: Final[Mapping[str, Mapping[str, str]]] = {
    "claude-opus-4-6": _entry("5", "25", "0.50", "6.25"),
    "claude-opus-4-5": _entry("5", "25", "0.50", "6.25"),
    "claude-opus-4": _entry("15", "75", "1.50", "18.75"),
    "claude-sonnet-4": _entry("3", "15", "0.30", "3.75"),
    "claude-haiku-4": _entry("1", "5", "0.10", "1.25"),
    "claude-3-7-sonnet": _entry("3", "15", "0.30", "3.75"),
    "claude-3-5-sonnet": _entry("3", "15", "0.30", "3.75"),
    "claude-3-5-haiku": _entry("0.80", "4", "0.08", "1"),
    "claude-3-opus": _entry("15", "75", "1.50", "18.75"),
    "claude-3-haiku": _entry("0.25", "1.25", "0.03", "0.30"),
}
