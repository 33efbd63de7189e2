"""Query strings as the SDK writes them: bracketed arrays and range keys, validated into typed values.

Arrays repeat a ``name[]`` key (``types[]=a&types[]=b``); ranges are literal bracketed keys
(``created_at[gte]=2026-01-01T00:00:00+00:00``); booleans are ``true``/``false``. Parameters an
endpoint does not know are ignored (older SDKs send ``?beta=true``); a known one with a bad value is
a 400 that names it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from starlette.datastructures import QueryParams

from corral.contracts.api.errors import invalid
from corral.contracts.clock import parse_rfc3339, rfc3339

Order = Literal["asc", "desc"]
RANGE_OPS: Final = ("gt", "gte", "lt", "lte")

_RFC3339: Final = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})?$")
_TRUE: Final = frozenset({"true", "1"})
_FALSE: Final = frozenset({"false", "0"})


@dataclass(frozen=True)
class TimeBounds:
    gt: str | None = None
    gte: str | None = None
    lt: str | None = None
    lte: str | None = None


class Query:
    """Typed reads of one request's query parameters; each raises a 400 naming the parameter."""

    def __init__(self, params: QueryParams) -> None:
        self._params = params

    def text(self, name: str) -> str | None:
        value = self._params.get(name)
        return value if value else None

    def integer(self, name: str, *, default: int, ge: int, le: int) -> int:
        value = self.optional_integer(name, ge=ge, le=le)
        return default if value is None else value

    def optional_integer(self, name: str, *, ge: int, le: int | None = None) -> int | None:
        raw = self._params.get(name)
        if raw is None or raw == "":
            return None
        try:
            value = int(raw)
        except ValueError:
            raise invalid(f"{name}: {raw!r} is not an integer") from None
        if value < ge or (le is not None and value > le):
            bound = f"between {ge} and {le}" if le is not None else f"at least {ge}"
            raise invalid(f"{name}: must be {bound}, got {value}")
        return value

    def boolean(self, name: str, *, default: bool = False) -> bool:
        raw = self._params.get(name)
        if raw is None or raw == "":
            return default
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise invalid(f"{name}: {raw!r} is not a boolean (use true or false)")

    def choice(self, name: str, choices: Collection[str], *, default: str) -> str:
        raw = self._params.get(name)
        if raw is None or raw == "":
            return default
        if raw not in choices:
            raise invalid(f"{name}: {raw!r} is not one of {_listing(choices)}")
        return raw

    def order(self, *, default: Order) -> Order:
        """``order``: ``asc`` or ``desc``."""
        return "asc" if self.choice("order", ("asc", "desc"), default=default) == "asc" else "desc"

    def values(self, name: str, *, allowed: Collection[str] | None = None, max_items: int = 100) -> list[str] | None:
        """The values of ``name[]`` (plain repeated ``name`` is accepted too); ``None`` when absent."""
        key = f"{name}[]"
        found = [*self._params.getlist(key), *self._params.getlist(name)]
        if not found:
            return None
        if len(found) > max_items:
            raise invalid(f"{key}: at most {max_items} values are allowed, got {len(found)}")
        if allowed is not None:
            for value in found:
                if value not in allowed:
                    known = _listing(allowed) if len(allowed) <= 8 else "the documented values"
                    raise invalid(f"{key}: {value!r} is not one of {known}")
        return list(dict.fromkeys(found))

    def time_bounds(self, name: str, *, ops: Iterable[str] = RANGE_OPS) -> TimeBounds:
        """``name[gt|gte|lt|lte]`` as RFC 3339 UTC strings; an op outside ``ops`` is refused."""
        allowed = tuple(ops)
        found: dict[str, str] = {}
        prefix = f"{name}["
        for key, raw in self._params.multi_items():
            if not (key.startswith(prefix) and key.endswith("]")):
                continue
            op = key[len(prefix) : -1]
            if op not in allowed:
                raise invalid(f"{key}: unsupported filter; use {', '.join(f'{name}[{o}]' for o in allowed)}")
            found[op] = timestamp(key, raw)
        return TimeBounds(gt=found.get("gt"), gte=found.get("gte"), lt=found.get("lt"), lte=found.get("lte"))


def timestamp(name: str, raw: str) -> str:
    """``raw`` normalised to Corral's RFC 3339 form (UTC, ``Z``); a naive time is taken as UTC."""
    if not _RFC3339.match(raw):
        raise invalid(f"{name}: {raw!r} is not an RFC 3339 timestamp (e.g. 2026-01-01T00:00:00Z)")
    try:
        return rfc3339(parse_rfc3339(raw))
    except ValueError:
        raise invalid(f"{name}: {raw!r} is not a valid date and time") from None


def _listing(choices: Collection[str]) -> str:
    return ", ".join(sorted(choices))
