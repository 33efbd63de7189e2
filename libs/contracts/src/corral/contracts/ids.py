"""Identifiers: a type prefix plus a time-ordered, 26-character Crockford base32 body (ULID layout).

Ids sort by creation time within a millisecond's resolution, which keeps Postgres indexes and
JetStream subjects tidy, and the prefix says what kind of object an id names (`agent_`, `sesn_`...).
"""

from __future__ import annotations

import os
import time
from typing import Final

_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

AGENT: Final = "agent"
ENVIRONMENT: Final = "env"
SESSION: Final = "sesn"
SESSION_RESOURCE: Final = "sesrsc"
EVENT: Final = "sevt"
WORKSPACE: Final = "wrkspc"
API_KEY: Final = "apikey"
REQUEST: Final = "req"
MESSAGE: Final = "msg"
VAULT: Final = "vlt"
CREDENTIAL: Final = "vcrd"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """Return a fresh id such as ``sesn_01JD3...``: 48 bits of milliseconds, 80 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_encode(millis, 10)}{_encode(rand, 16)}"


def has_prefix(value: str, prefix: str) -> bool:
    """Whether ``value`` looks like an id of the kind ``prefix`` names (cheap shape check only)."""
    body = value.removeprefix(prefix + "_")
    return body != value and 0 < len(body) <= 64 and body.isalnum()
