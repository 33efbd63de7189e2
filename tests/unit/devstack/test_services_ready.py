"""``wait_services_ready`` reports each service ready once (``make up`` printed "gateway ready"
twice: once when the gateway first answered, again for the gateway's own entry in its /health)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from corral.devstack.services import wait_services_ready

HEALTH = {"status": "ok", "services": {"gateway": "ok", "session-store": "ok", "harness": "ok"}}


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(HEALTH).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_every_service_is_reported_ready_once(gateway: str) -> None:
    ready: list[str] = []
    wait_services_ready([], gateway_url=gateway, model_url=None, deadline=float("inf"), on_ready=ready.append)
    assert sorted(ready) == ["gateway", "harness", "session-store"]
