"""A real git smart-HTTP server for tests: ``git http-backend`` behind a small HTTP server that
requires a token (HTTP Basic, any user name, the token as password; or ``Bearer``), as GitHub does.

``GitServer.tokens`` is the set of tokens it accepts now (a test rotates it); every request's path
and whether its credentials were accepted is recorded in ``seen`` (``"ok"``, ``"refused"`` or
``"none"``). Repositories are bare repositories under ``root``; pushes are enabled.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class GitServer:
    root: Path
    port: int = 0
    tokens: set[str] = field(default_factory=set)
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    def bare(self, name: str) -> Path:
        return self.root / f"{name}.git"

    def create(self, name: str, files: dict[str, str]) -> Path:
        """A bare repository ``name`` whose ``main`` holds ``files`` in one commit."""
        bare = self.bare(name)
        git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        git("-C", str(bare), "config", "http.receivepack", "true")
        work = self.root / f"{name}-seed"
        git("init", "--quiet", "--initial-branch=main", str(work))
        for path, text in files.items():
            (work / path).write_text(text)
        git("-C", str(work), "add", ".")
        git("-C", str(work), "-c", "user.name=seed", "-c", "user.email=seed@example.com", "commit", "-qm", "seed")
        git("-C", str(work), "push", "--quiet", str(bare), "main")
        return bare

    def log(self, name: str, ref: str = "main") -> list[str]:
        out = git("-C", str(self.bare(name)), "log", "--format=%s", ref)
        return out.splitlines()


def git(*args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True, env=env).stdout


def _handler(server: GitServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection, closed after the response

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _token(self) -> str | None:
            header = self.headers.get("Authorization", "")
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "basic":
                try:
                    return base64.b64decode(value).decode().partition(":")[2]
                except ValueError:
                    return None
            if scheme.lower() == "bearer":
                return value
            return None

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return bytes(data)
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            token = self._token()
            path = self.path.partition("?")[0]
            verdict = "none" if token is None else ("ok" if token in server.tokens else "refused")
            server.seen.append((self.command, path, verdict))
            if verdict != "ok":
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = self._body() if self.command == "POST" else b""
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(server.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": "test",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": self.path.partition("?")[2],
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            }
            result = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env)
            head, _, payload = result.stdout.partition(b"\r\n\r\n")
            if not _:
                head, _, payload = result.stdout.partition(b"\n\n")
            status = 200
            headers = []
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

    return Handler


@contextlib.contextmanager
def serving(root: Path) -> Iterator[GitServer]:
    """A ``GitServer`` on 127.0.0.1 (a free port) until the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    server = GitServer(root=root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, name="git-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
