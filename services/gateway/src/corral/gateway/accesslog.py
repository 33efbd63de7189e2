"""The access log (uvicorn's ``uvicorn.access`` logger) never carries a query string's secrets.

A client may put an API key (or any token) in the URL: ``GET /v1/agents?api_key=sk-...``. The gateway
refuses it (keys are read from headers only), but uvicorn logs the full path with its query string.
``RedactQuery`` rewrites that path before the record is formatted: the values of the query
parameters the API defines are kept (they help reading the log), every other value is replaced by
``[redacted]``, and a query that does not parse is replaced whole.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Final

ACCESS_LOGGER: Final = "uvicorn.access"
REDACTED: Final = "[redacted]"

#: Query parameters of the public API whose values are safe to log.
KNOWN_PARAMS: Final = frozenset(
    {
        "limit",
        "page",
        "order",
        "include_archived",
        "agent_id",
        "agent_version",
        "version",
        "statuses[]",
        "types[]",
        "event_deltas[]",
        "beta",
        *(f"created_at[{op}]" for op in ("gt", "gte", "lt", "lte")),
    }
)

_PATH_ARG: Final = 2  # uvicorn's access record args: client, method, path with query, http version, status


def redact_target(target: str) -> str:
    """``target`` (a path with an optional query string) with unknown parameters' values redacted."""
    path, sep, query = target.partition("?")
    if not sep or not query:
        return target
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return f"{path}?{REDACTED}"
    kept = [(name, value if name in KNOWN_PARAMS else REDACTED) for name, value in pairs]
    return f"{path}?{urllib.parse.urlencode(kept, safe='[]')}"


class RedactQuery(logging.Filter):
    """Rewrites the path argument of uvicorn's access records (other records pass unchanged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > _PATH_ARG and isinstance(args[_PATH_ARG], str):
            record.args = (*args[:_PATH_ARG], redact_target(args[_PATH_ARG]), *args[_PATH_ARG + 1 :])
        return True


def install() -> None:
    """Redact query strings in every access record from now on (idempotent)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQuery) for f in logger.filters):
        logger.addFilter(RedactQuery())
