"""Putting credentials' values where the sandbox sent their placeholders. Pure.

An ``Injection`` is one ``environment_variable`` credential bound to the request's host: its
placeholder, its value, and where it may be substituted (``injection_location``: request header
values, the request body, or both). Only the placeholders of the injections given are replaced;
any other text, another credential's placeholder among it, is left exactly as sent. The request
line (method, target, query) is never touched: the API defines header values and bodies only.

A value that would break the message's framing in a header (CR, LF or NUL) is not put in a header:
the placeholder stays. Nothing here logs; values are excluded from ``repr``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_HEADER_BREAKERS = (b"\r", b"\n", b"\0")


@dataclass(frozen=True)
class Injection:
    credential_id: str
    placeholder: str
    value: str = field(repr=False)
    header: bool
    body: bool

    @property
    def placeholder_bytes(self) -> bytes:
        return self.placeholder.encode("ascii")

    @property
    def value_bytes(self) -> bytes:
        return self.value.encode("utf-8")


def _replace(data: bytes, injections: Iterable[Injection]) -> bytes:
    for injection in injections:
        if injection.placeholder_bytes in data:
            data = data.replace(injection.placeholder_bytes, injection.value_bytes)
    return data


def substitute_header_value(value: bytes, injections: Sequence[Injection]) -> bytes:
    """``value`` with the placeholder of each injection allowed in headers replaced by its value."""
    usable = [i for i in injections if i.header and not any(b in i.value_bytes for b in _HEADER_BREAKERS)]
    return _replace(value, usable)


def substitute_headers(
    headers: Iterable[tuple[bytes, bytes]], injections: Sequence[Injection]
) -> list[tuple[bytes, bytes]]:
    """Every header, its value substituted (names are never changed)."""
    return [(name, substitute_header_value(value, injections)) for name, value in headers]


def substitute_body(body: bytes, injections: Sequence[Injection]) -> bytes:
    """``body`` with the placeholder of each injection allowed in bodies replaced by its value."""
    return _replace(body, [i for i in injections if i.body])


def injects_body(injections: Sequence[Injection]) -> bool:
    return any(i.body for i in injections)
