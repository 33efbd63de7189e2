"""HTTP/1.x request heads as the egress proxy reads them, and the proxy's own answers.

A client of the proxy sends either ``CONNECT host:port HTTP/1.1`` (a tunnel, for HTTPS) or a request
with an absolute URI (``GET http://host[:port]/path HTTP/1.1``). The latter is forwarded in origin
form (``GET /path HTTP/1.1``) with ``Host`` taken from the URI, the hop-by-hop headers (``Connection``
and every header it names, ``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``, ``Upgrade``) dropped and
``Connection: close`` added: one request per client connection.

Everything here is parsing and formatting; nothing is logged (header values will carry secrets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from corral.credential_proxy.hosts import BadHost, IPAddress, describe, parse_host

_TOKEN: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_VERSION: Final = re.compile(r"^HTTP/1\.[01]$")
_PORT: Final = re.compile(r"^[0-9]{1,5}$")
_DIGITS: Final = re.compile(r"^[0-9]{1,18}$")
#: Never forwarded: hop-by-hop headers, and ``Host`` (rewritten from the URI). ``Proxy-*`` go too.
_NOT_FORWARDED: Final = frozenset({"connection", "keep-alive", "te", "trailer", "upgrade", "host"})

REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class BadRequest(ValueError):
    """The request cannot be read or is not one the proxy carries; the message says why (400)."""


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    version: str
    #: In the order received, names as sent.
    headers: tuple[tuple[str, str], ...]

    def values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


@dataclass(frozen=True)
class Destination:
    """Where a request wants to go: ``host`` as ``parse_host`` gives it, and the port."""

    host: str | IPAddress
    port: int

    @property
    def authority(self) -> str:
        return f"{describe(self.host)}:{self.port}"


@dataclass(frozen=True)
class Body:
    """How the request body is framed: ``none``, ``length`` bytes, or ``chunked``."""

    kind: Literal["none", "length", "chunked"]
    length: int = 0


def parse_head(data: bytes) -> RequestHead:
    """Parse a request line and headers (``data`` ends with the blank line).

    Raises:
        BadRequest: not an HTTP/1.0 or 1.1 request head.
    """
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest("the request head is not text") from exc
    lines = text.removesuffix("\r\n\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest("the request line must be 'METHOD target HTTP/1.1'")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise BadRequest("the request method is not a token")
    if not _VERSION.fullmatch(version):
        raise BadRequest("only HTTP/1.0 and HTTP/1.1 are spoken here")
    if not target or any(c <= " " or c == "\x7f" for c in target):
        raise BadRequest("the request target is empty or contains spaces or control characters")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            raise BadRequest("folded header lines are not accepted")
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise BadRequest("a header line is not 'Name: value'")
        value = value.strip(" \t")
        if any(c in "\x00\r\n" for c in value):
            raise BadRequest("a header value contains a control character")
        headers.append((name, value))
    return RequestHead(method=method, target=target, version=version, headers=tuple(headers))


def _destination(host_text: str, port_text: str | None, default_port: int) -> Destination:
    if port_text is None:
        port = default_port
    elif _PORT.fullmatch(port_text) and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise BadRequest(f"{port_text!r} is not a port number")
    try:
        return Destination(host=parse_host(host_text), port=port)
    except BadHost as exc:
        raise BadRequest(str(exc)) from None


def _split_authority(authority: str) -> tuple[str, str | None]:
    """``host[:port]`` with an IPv6 host in brackets."""
    if "@" in authority:
        raise BadRequest("user names and passwords in the request target are not accepted")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise BadRequest(f"{authority!r} has an unclosed '['")
        rest = authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise BadRequest(f"{authority!r} is not host:port")
        return authority[: end + 1], rest[1:] if rest else None
    host, colon, port = authority.rpartition(":")
    if not colon:
        return authority, None
    if ":" in host:
        raise BadRequest(f"{authority!r}: write an IPv6 address in brackets")
    return host, port


def connect_destination(head: RequestHead) -> Destination:
    """The ``host:port`` of a ``CONNECT`` request."""
    host, port = _split_authority(head.target)
    if port is None:
        raise BadRequest("CONNECT needs host:port")
    return _destination(host, port, 0)


@dataclass(frozen=True)
class Forward:
    """A plain-HTTP request to send on: where to, the origin-form head, and the body's framing."""

    destination: Destination
    head: bytes
    body: Body


def forward_request(head: RequestHead) -> Forward:
    """Turn an absolute-URI request into what goes upstream.

    Raises:
        BadRequest: not an ``http://`` absolute URI, or a body whose framing is ambiguous.
    """
    scheme, sep, rest = head.target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise BadRequest("send 'CONNECT host:port' or a request with an absolute http:// URI to this proxy")
    if scheme.lower() == "https":
        raise BadRequest("use CONNECT for https:// (set HTTPS_PROXY to this proxy)")
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:].partition("#")[0]
    if not authority:
        raise BadRequest("the request URI has no host")
    host, port = _split_authority(authority)
    destination = _destination(host, port, 80)
    if not path.startswith("/"):
        path = "/" + path
    body = _body(head)
    named = {token.strip().lower() for value in head.values("connection") for token in value.split(",")}
    lines = [f"{head.method} {path} {head.version}"]
    lines.append(f"Host: {describe(destination.host)}" + ("" if destination.port == 80 else f":{destination.port}"))
    lines += [f"{k}: {v}" for k, v in head.headers if not _dropped(k.lower(), named)]
    lines.append("Connection: close")
    return Forward(destination=destination, head=("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), body=body)


def _dropped(name: str, named_by_connection: set[str]) -> bool:
    return name in _NOT_FORWARDED or name.startswith("proxy-") or name in named_by_connection


def _body(head: RequestHead) -> Body:
    encodings = head.values("transfer-encoding")
    lengths = head.values("content-length")
    if encodings and lengths:
        raise BadRequest("a request cannot have both Transfer-Encoding and Content-Length")
    if encodings:
        if [e.strip().lower() for e in encodings] != ["chunked"]:
            raise BadRequest("the only Transfer-Encoding carried is 'chunked'")
        return Body("chunked")
    if lengths:
        values = {v.strip() for value in lengths for v in value.split(",")}
        if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
            raise BadRequest("Content-Length must be one number")
        return Body("length", int(next(iter(values))))
    return Body("none")


def answer(status: int, text: str = "") -> bytes:
    """A complete response from the proxy itself: ``text`` as one line of plain text, then close."""
    body = (text + "\n").encode() if text else b""
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


CONNECTION_ESTABLISHED: Final = b"HTTP/1.1 200 Connection established\r\n\r\n"
