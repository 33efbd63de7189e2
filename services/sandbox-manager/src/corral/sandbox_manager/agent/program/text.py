"""Text every tool returns: valid UTF-8, capped to the output limit, and binary files told apart."""

from __future__ import annotations

#: How much of a file is looked at to decide whether it is binary.
BINARY_SNIFF_BYTES = 8192


def clean(text: str) -> str:
    """Text that encodes as UTF-8 (lone surrogates from undecodable file names become U+FFFD)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def cap(text: str, limit: int) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return (
        data[:limit].decode("utf-8", "ignore")
        + f"\n[output truncated: {len(data)} bytes in all, only the first {limit} are shown]"
    )


def split(text: str, part_bytes: int) -> list[str]:
    """``text`` in pieces of at most ``part_bytes`` UTF-8 bytes each, cut between characters; every
    piece but the last holds at least ``part_bytes - 3`` bytes (one reply line each, see ``server``)."""
    data = text.encode("utf-8")
    if len(data) <= part_bytes:
        return [text]
    pieces = []
    start = 0
    while start < len(data):
        end = min(start + part_bytes, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # not inside a character
            end -= 1
        pieces.append(data[start:end].decode("utf-8"))
        start = end
    return pieces


def looks_binary(head: bytes) -> bool:
    return b"\x00" in head
