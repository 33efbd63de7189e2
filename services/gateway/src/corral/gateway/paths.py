"""Ids in URL paths: one with the wrong prefix cannot name anything, so it is a 404 at once."""

from __future__ import annotations

from corral.contracts import ids
from corral.contracts.api.errors import not_found


def object_id(value: str, *, prefix: str, kind: str) -> str:
    """``value`` if it looks like an id of ``kind`` (``sesn_...`` for a session), else a 404 naming it."""
    if not ids.has_prefix(value, prefix):
        raise not_found(kind, value)
    return value
