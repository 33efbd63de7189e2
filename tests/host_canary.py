"""A web server on this machine, listening on every address (``::`` dual-stack, so 0.0.0.0 too), that
answers every request with a canary: what a sandbox must never read through its egress proxy."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class HostCanary:
    port: int
    canary: str


class _DualStackServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


@contextlib.contextmanager
def serving_canary() -> Iterator[HostCanary]:
    canary = f"host-canary-{uuid.uuid4().hex}"
    body = canary.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = _DualStackServer(("::", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="host-canary", daemon=True)
    thread.start()
    try:
        yield HostCanary(port=server.server_address[1], canary=canary)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
