"""Request heads as the egress proxy reads them, what it forwards, and its own answers."""

from __future__ import annotations

import ipaddress

import pytest

from corral.credential_proxy.http_head import (
    BadRequest,
    Body,
    answer,
    connect_destination,
    forward_request,
    parse_head,
)


def head(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("latin-1") + b"\r\n\r\n"


def test_a_request_line_and_headers_are_read_in_order() -> None:
    parsed = parse_head(head("GET http://example.com/a?b=1 HTTP/1.1\nHost: example.com\nAccept:  */* \nX-A: 1"))
    assert (parsed.method, parsed.target, parsed.version) == ("GET", "http://example.com/a?b=1", "HTTP/1.1")
    assert parsed.headers == (("Host", "example.com"), ("Accept", "*/*"), ("X-A", "1"))
    assert parsed.values("host") == ["example.com"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("GET http://example.com/", "request line"),
        ("GET  http://example.com/ HTTP/1.1", "request line"),
        ("GET http://example.com/ HTTP/2.0", "HTTP/1.0 and HTTP/1.1"),
        ("G(T http://example.com/ HTTP/1.1", "method"),
        ("GET http://example.com/\x01 HTTP/1.1", "control characters"),
        ("GET http://example.com/ HTTP/1.1\nHost example.com", "Name: value"),
        ("GET http://example.com/ HTTP/1.1\nBad Name: x", "Name: value"),
        ("GET http://example.com/ HTTP/1.1\nX-A: 1\n folded", "folded"),
        ("GET http://example.com/ HTTP/1.1\nX-A: a\x00b", "control character"),
    ],
)
def test_a_malformed_head_is_refused_saying_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        parse_head(head(text))


@pytest.mark.parametrize(
    ("target", "host", "port"),
    [
        ("pypi.org:443", "pypi.org", 443),
        ("PyPI.org.:443", "pypi.org", 443),
        ("[2001:db8::1]:8443", ipaddress.IPv6Address("2001:db8::1"), 8443),
        ("203.0.113.9:80", ipaddress.IPv4Address("203.0.113.9"), 80),
    ],
)
def test_connect_names_host_and_port(target: str, host: object, port: int) -> None:
    destination = connect_destination(parse_head(head(f"CONNECT {target} HTTP/1.1")))
    assert (destination.host, destination.port) == (host, port)


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("pypi.org", "host:port"),
        ("pypi.org:0", "port number"),
        ("pypi.org:65536", "port number"),
        ("pypi.org:https", "port number"),
        ("user@pypi.org:443", "user names"),
        ("2001:db8::1:443", "brackets"),
        ("[2001:db8::1:443", "unclosed"),
        ("2130706433:443", "not a host name"),
    ],
)
def test_a_bad_connect_target_is_refused(target: str, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        connect_destination(parse_head(head(f"CONNECT {target} HTTP/1.1")))


def test_an_absolute_uri_is_forwarded_in_origin_form_without_hop_by_hop_or_proxy_headers() -> None:
    request = parse_head(
        head(
            "POST http://Example.com/upload?x=1#frag HTTP/1.1\n"
            "Host: attacker.test\n"
            "Proxy-Authorization: Basic c2VjcmV0\n"
            "Proxy-Connection: keep-alive\n"
            "Connection: keep-alive, X-Drop-Me\n"
            "Keep-Alive: timeout=5\n"
            "X-Drop-Me: 1\n"
            "TE: trailers\n"
            "Upgrade: websocket\n"
            "Authorization: Bearer kept\n"
            "Content-Length: 5"
        )
    )
    forward = forward_request(request)
    assert (forward.destination.host, forward.destination.port) == ("example.com", 80)
    assert forward.body == Body("length", 5)
    assert forward.head == (
        b"POST /upload?x=1 HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"Authorization: Bearer kept\r\n"
        b"Content-Length: 5\r\n"
        b"Connection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("target", "host_header", "path"),
    [
        ("http://example.com", "example.com", "/"),
        ("http://example.com?q", "example.com", "/?q"),
        ("http://example.com:8080/x", "example.com:8080", "/x"),
        ("HTTP://[2001:db8::1]/", "[2001:db8::1]", "/"),
    ],
)
def test_the_host_header_comes_from_the_uri(target: str, host_header: str, path: str) -> None:
    forwarded = forward_request(parse_head(head(f"GET {target} HTTP/1.0"))).head.decode()
    assert forwarded.startswith(f"GET {path} HTTP/1.0\r\nHost: {host_header}\r\n")


def test_a_chunked_body_is_framed_as_chunked() -> None:
    request = parse_head(head("PUT http://example.com/ HTTP/1.1\nTransfer-Encoding: Chunked"))
    assert forward_request(request).body == Body("chunked")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("GET /relative HTTP/1.1", "absolute http:// URI"),
        ("GET https://example.com/ HTTP/1.1", "use CONNECT"),
        ("GET ftp://example.com/ HTTP/1.1", "absolute http:// URI"),
        ("GET http:///path HTTP/1.1", "no host"),
        ("GET http://user:pw@example.com/ HTTP/1.1", "user names"),
        ("POST http://example.com/ HTTP/1.1\nContent-Length: 3\nTransfer-Encoding: chunked", "both"),
        ("POST http://example.com/ HTTP/1.1\nTransfer-Encoding: gzip, chunked", "only Transfer-Encoding"),
        ("POST http://example.com/ HTTP/1.1\nContent-Length: 3\nContent-Length: 4", "one number"),
        ("POST http://example.com/ HTTP/1.1\nContent-Length: ²", "one number"),
    ],
)
def test_requests_the_proxy_does_not_carry_are_refused(text: str, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        forward_request(parse_head(head(text)))


def test_the_proxy_answers_with_one_line_of_plain_text_and_closes() -> None:
    assert answer(403, "egress to evil.test refused") == (
        b"HTTP/1.1 403 Forbidden\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 28\r\n"
        b"Connection: close\r\n\r\n"
        b"egress to evil.test refused\n"
    )
