"""A small web site and a SearXNG-compatible search backend on loopback, for the web tool tests.

``serving_site(address)`` serves, on ``address`` (a loopback address such as 127.0.0.7 that a test
stack's ``CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES`` admits, or 127.0.0.1, which it does not):

- ``/page.html``: an HTML page whose text holds ``site.canary``;
- ``/long.html``: a page of about 40 000 characters of text;
- ``/redirect?to=<url>``: a 302 to ``url``;
- ``/search?q=...&format=json``: SearXNG's JSON answer, three results for any query;
- anything else: 404.

Every request's path is recorded in ``site.requests``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit


@dataclass
class Site:
    address: str
    port: int
    canary: str
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://{self.address}:{self.port}{path}"


SEARCH_RESULTS = [
    {"url": "https://docs.example.com/otters", "title": "Otters in the docs", "content": "All about otters."},
    {"url": "https://ads.example.net/buy", "title": "Buy otters", "content": "An advert."},
    {"url": "https://example.org/otters", "title": "Otter news", "content": "", "publishedDate": "2026-01-02"},
]


@contextlib.contextmanager
def serving_site(address: str) -> Iterator[Site]:
    site = Site(address=address, port=0, canary=f"site-canary-{uuid.uuid4().hex}")
    page = (
        "<!doctype html><html><head><title>Canary page</title><script>var hidden = 1;</script></head>"
        f"<body><h1>Welcome</h1><p>The canary is <b>{site.canary}</b>.</p>"
        '<p><a href="/other.html">another page</a></p></body></html>'
    ).encode()
    long_page = ("<html><body>" + "".join(f"<p>Paragraph {i} of a long page.</p>" for i in range(1500))).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.requests.append(self.path)
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            if parts.path == "/page.html":
                self._send(200, "text/html; charset=utf-8", page)
            elif parts.path == "/long.html":
                self._send(200, "text/html", long_page)
            elif parts.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", query["to"][0])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif parts.path == "/search" and query.get("format") == ["json"]:
                body = {"query": query.get("q", [""])[0], "results": SEARCH_RESULTS}
                self._send(200, "application/json", json.dumps(body).encode())
            else:
                self._send(404, "text/plain", b"not here")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((address, 0), Handler)
    server.daemon_threads = True
    site.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name=f"site-{address}", daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
