"""The exec agent's egress relay, locally (no Docker): TCP on loopback in, the proxy's unix socket out."""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.sandbox_manager.agent.program.egress import EgressRelay


@pytest.fixture
def proxy_socket(tmp_path: Path) -> Iterator[tuple[str, list[bytes]]]:
    """A unix-socket server standing in for the egress proxy: records what it got, answers upper-cased."""
    path = str(tmp_path / "egress.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                received.append(data)
                conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield path, received
    finally:
        server.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer


def test_the_relay_carries_each_connection_both_ways_to_the_proxy_socket(
    proxy_socket: tuple[str, list[bytes]],
) -> None:
    path, received = proxy_socket
    port = free_port()
    EgressRelay(path, port, limit=4).start()

    big = b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n" + b"x" * 300_000
    assert exchange(port, b"get / http/1.1\r\n\r\n") == b"GET / HTTP/1.1\r\n\r\n"
    assert exchange(port, big) == big.upper()
    assert received == [b"get / http/1.1\r\n\r\n", big]


def test_without_a_proxy_behind_it_a_connection_is_closed_not_hung(tmp_path: Path) -> None:
    port = free_port()
    EgressRelay(str(tmp_path / "missing.sock"), port, limit=1).start()

    for _ in range(3):  # the slot of a failed connection is given back
        try:
            answer = exchange(port, b"hello")
        except OSError as closed:  # a timeout (a hung relay) is an OSError too, and fails here
            # Closed with our bytes unread: a reset, seen on write, on shutdown or on read.
            assert closed.errno in {errno.ECONNRESET, errno.ENOTCONN, errno.EPIPE}, closed
            answer = b""
        assert answer == b""
