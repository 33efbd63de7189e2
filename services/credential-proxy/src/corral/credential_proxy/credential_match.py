"""Which of a session's credentials applies where. Pure.

**MCP server URLs** (``static_bearer`` and ``mcp_oauth``, by their ``mcp_server_url``). Both URLs are
normalised: the scheme and host lower-cased (a trailing dot of the host dropped, IPv6 without
brackets), the port made explicit (80 for ``http``, 443 for ``https``), the path's empty and ``.``
segments dropped and ``..`` applied, percent-escapes of unreserved characters decoded (``%7E`` is
``~``) and other escapes upper-cased, and the query and fragment ignored. A credential covers a
server URL when scheme, host and port are equal and the credential's path is a prefix of the server's
**by whole segments**: ``https://mcp.example.com/mcp`` covers ``https://mcp.example.com/mcp``,
``.../mcp/`` and ``.../mcp/sse``, not ``.../mcpx``, ``http://mcp.example.com/mcp`` nor
``https://mcp.example.com:8443/mcp``; a credential with no path covers its whole origin. When several
cover a URL, the longest path wins, then the first vault in the session's ``vault_ids``, then the
oldest credential.

**Outbound hosts** (``environment_variable``, by ``networking``): ``unrestricted`` matches every host;
``limited`` matches a host equal to one of ``allowed_hosts`` (case-insensitive, trailing dot ignored),
and an entry ``*.example.org`` matches every name under ``example.org`` at any depth, not
``example.org`` itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@dataclass(frozen=True)
class McpUrl:
    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]

    def covers(self, other: McpUrl) -> bool:
        """This credential URL applies to the server URL ``other``."""
        return (self.scheme, self.host, self.port) == (other.scheme, other.host, other.port) and other.segments[
            : len(self.segments)
        ] == self.segments


def _unescape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else f"%{match.group(1).upper()}"


def mcp_url(url: str) -> McpUrl | None:
    """``url`` normalised, or ``None`` when it is not an ``http``/``https`` URL with a host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in ("http", "https") or not host:
        return None
    segments: list[str] = []
    for segment in parts.path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(_ESCAPE.sub(_unescape, segment))
    return McpUrl(scheme, host, port if port is not None else (443 if scheme == "https" else 80), tuple(segments))


def best_mcp_match(server_url: str, candidates: list[tuple[str, Any]]) -> Any | None:
    """The item of ``candidates`` (``(mcp_server_url, item)`` in the order that breaks ties) whose URL
    covers ``server_url`` with the longest path; ``None`` when none does."""
    server = mcp_url(server_url)
    if server is None:
        return None
    best: tuple[int, Any] | None = None
    for credential_url, item in candidates:
        parsed = mcp_url(credential_url)
        if parsed is None or not parsed.covers(server):
            continue
        if best is None or len(parsed.segments) > best[0]:
            best = (len(parsed.segments), item)
    return None if best is None else best[1]


def _host(host: str) -> str:
    return host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def host_allowed(networking: dict[str, Any], host: str) -> bool:
    """An ``environment_variable`` credential with this ``networking`` may be sent to ``host``."""
    if networking.get("type") == "unrestricted":
        return True
    if networking.get("type") != "limited":
        return False
    wanted = _host(host)
    for entry in networking.get("allowed_hosts") or []:
        pattern = _host(str(entry))
        if pattern.startswith("*."):
            if wanted.endswith(pattern[1:]) and len(wanted) > len(pattern) - 1:
                return True
        elif wanted == pattern:
            return True
    return False
