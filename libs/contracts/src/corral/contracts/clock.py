"""Timestamps as the wire carries them: RFC 3339, UTC, microseconds, a trailing ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime) -> str:
    """Format an aware datetime the way every Corral timestamp is written."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or an offset); naive input is taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def now_rfc3339() -> str:
    return rfc3339(now())
