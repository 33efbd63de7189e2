"""Opaque page cursors: base64url JSON holding the sort key to continue after, and the order."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from corral.contracts.api.errors import invalid


def encode(order: str, key: list[Any], *, direction: str = "next") -> str:
    raw = json.dumps({"o": order, "k": key, "d": direction}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, *, order: str) -> tuple[list[Any], str]:
    """The key and direction of ``cursor``; 400 when it is malformed or made for another order."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        key, made_for, direction = data["k"], data["o"], data.get("d", "next")
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise invalid("page: not a cursor returned by this API; pass next_page from a previous response") from None
    if made_for != order:
        raise invalid(f"page: this cursor was made for order={made_for!r}; repeat the request with that order")
    if not isinstance(key, list) or direction not in ("next", "prev"):
        raise invalid("page: not a cursor returned by this API")
    return key, direction
