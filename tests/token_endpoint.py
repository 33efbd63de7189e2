"""A real OAuth token endpoint for tests: an HTTP server in a thread that answers refresh-token grants.

It records every request (headers and form) and answers as ``answer`` says (by default a new access
token, a rotated refresh token and ``expires_in``); ``hold`` keeps it from answering until set, so a
test can make refreshes overlap. Issued access tokens are kept in ``issued`` (newest last).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Received:
    headers: dict[str, str]
    form: dict[str, str]


Answer = Callable[[Received], tuple[int, str, bytes]]
"""(status, content type, body) for a request."""


@dataclass
class TokenServer:
    address: str
    port: int = 0
    prefix: str = "tok"
    received: list[Received] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)
    answer: Answer | None = None
    expires_in: int | None = 3600
    hold: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.hold.set()

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/oauth/token"

    def grant(self, _request: Received) -> tuple[int, str, bytes]:
        """A new token pair, as a conforming endpoint answers a refresh."""
        access = f"{self.prefix}-access-{secrets.token_hex(8)}"
        rotated = f"{self.prefix}-refresh-{secrets.token_hex(8)}"
        with self.lock:
            self.issued.append(access)
            self.refresh_tokens.append(rotated)
        document: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "refresh_token": rotated}
        if self.expires_in is not None:
            document["expires_in"] = self.expires_in
        return 200, "application/json", json.dumps(document).encode()


@contextlib.contextmanager
def serving_token_endpoint(address: str = "127.0.0.1", prefix: str = "tok") -> Iterator[TokenServer]:
    server_state = TokenServer(address=address, prefix=prefix)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode(), keep_blank_values=True).items()}
            received = Received(headers={k.lower(): v for k, v in self.headers.items()}, form=form)
            with server_state.lock:
                server_state.received.append(received)
            server_state.hold.wait(30)
            status, content_type, body = (server_state.answer or server_state.grant)(received)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    httpd = ThreadingHTTPServer((address, 0), Handler)
    httpd.daemon_threads = True
    server_state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, name="token-endpoint", daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        server_state.hold.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
