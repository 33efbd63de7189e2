"""The dev stack's trace collector: OTLP/HTTP in (protobuf, JSON, gzip), OTLP JSON lines out, ids in hex,
bad bodies refused with 400, and a forward target that is down never holding up a receive."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from corral.devstack.trace_collector import Forwarder, Sink, handler_for


@pytest.fixture
def spans() -> bytes:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent"), tracer.start_as_current_span("child", attributes={"k": "v"}):
        pass
    return bytes(encode_spans(memory.get_finished_spans()).SerializeToString())


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[str, Path, Sink]]:
    out = tmp_path / "traces" / "spans.jsonl"
    sink = Sink(out, Forwarder("http://127.0.0.1:9"))  # nothing listens on the discard port
    assert sink.forwarder is not None
    sink.forwarder.start()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(sink))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", out, sink
    finally:
        server.shutdown()
        server.server_close()
        sink.forwarder.close()
        sink.close()


def test_protobuf_and_gzip_exports_are_written_as_otlp_json_lines(
    collector: tuple[str, Path, Sink], spans: bytes
) -> None:
    url, out, _sink = collector
    protobuf = {"Content-Type": "application/x-protobuf"}
    assert httpx.post(f"{url}/v1/traces", content=spans, headers=protobuf).status_code == 200
    zipped = {**protobuf, "Content-Encoding": "gzip"}
    assert httpx.post(f"{url}/v1/traces", content=gzip.compress(spans), headers=zipped).status_code == 200
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]
    written = json.loads(lines[0])["resourceSpans"][0]["scopeSpans"][0]["spans"]
    by_name = {span["name"]: span for span in written}
    parent, child = by_name["parent"], by_name["child"]
    assert len(child["traceId"]) == 32 and int(child["traceId"], 16)
    assert child["parentSpanId"] == parent["spanId"] and len(parent["spanId"]) == 16
    assert child["attributes"] == [{"key": "k", "value": {"stringValue": "v"}}]


def test_json_exports_are_taken_and_bad_bodies_refused(collector: tuple[str, Path, Sink]) -> None:
    url, out, _sink = collector
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "j", "traceId": "AAECAwQFBgcICQoLDA0ODw=="}]}]}]}
    assert httpx.post(f"{url}/v1/traces", json=body).status_code == 200
    assert json.loads(out.read_text())["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == (
        "000102030405060708090a0b0c0d0e0f"
    )
    bad = httpx.post(f"{url}/v1/traces", content=b"\xff\x00garbage", headers={"Content-Type": "application/x-protobuf"})
    assert bad.status_code == 400 and "not an OTLP trace export" in bad.text
    assert httpx.post(f"{url}/v1/metrics", content=b"").status_code == 404


def test_a_forward_target_that_is_down_drops_exports_without_holding_up_receives(
    collector: tuple[str, Path, Sink], spans: bytes
) -> None:
    url, out, sink = collector
    headers = {"Content-Type": "application/x-protobuf"}
    for _ in range(5):
        assert httpx.post(f"{url}/v1/traces", content=spans, headers=headers, timeout=5).status_code == 200
    assert len(out.read_text().splitlines()) == 5
    assert sink.forwarder is not None
    sink.forwarder.close()  # waits for the sender to have tried every queued export
    assert sink.forwarder.dropped == 5
