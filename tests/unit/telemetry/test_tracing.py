"""The exporter wrapper: a collector that fails is said once, not once per batch, and its return."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from corral.telemetry.export import QuietExporter


class Flaky(SpanExporter):
    def __init__(self) -> None:
        self.results: list[SpanExportResult | Exception] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


def test_failures_are_said_once_and_the_recovery_once(caplog: pytest.LogCaptureFixture) -> None:
    inner = Flaky()
    failed, ok = SpanExportResult.FAILURE, SpanExportResult.SUCCESS
    inner.results = [ok, failed, failed, RuntimeError("exporter bug"), failed, ok, ok, failed]
    exporter = QuietExporter(inner, "http://127.0.0.1:1/v1/traces")
    batch: list[ReadableSpan] = [ReadableSpan(name="s")] * 3
    with caplog.at_level(logging.INFO, logger="corral.telemetry.export"):
        outcomes = [exporter.export(batch) for _ in range(8)]
    assert outcomes == [ok, failed, failed, failed, failed, ok, ok, failed]
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        ("WARNING", "trace export failed; dropping spans until the collector answers"),
        ("INFO", "trace export works again"),
        ("WARNING", "trace export failed; dropping spans until the collector answers"),
    ]
    assert caplog.records[1].fields == {"endpoint": "http://127.0.0.1:1/v1/traces", "dropped_spans": 12}  # type: ignore[attr-defined]


PROBE = """
import sys
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from corral import telemetry
telemetry.configure("probe")
span = telemetry.tracer("probe").start_span("s")
print(telemetry.enabled(), span.is_recording(), AsyncPGInstrumentor().is_instrumented_by_opentelemetry)
"""


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [(None, "False False False"), ("http://127.0.0.1:1", "True True True")],
    ids=["no-endpoint", "endpoint"],
)
def test_spans_are_made_only_when_there_is_somewhere_to_send_them(endpoint: str | None, expected: str) -> None:
    """Without ``OTEL_EXPORTER_OTLP_ENDPOINT`` a process makes no spans and wraps no library calls;
    with one, it records spans and instruments asyncpg (a fresh process each: the provider is global)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if endpoint is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split("\n")[-2] == expected, out.stderr


#: Each service's entry module, configured as it starts (``corral.runner`` calls ``configure``).
SERVICE_MAINS = (
    "corral.gateway.__main__",
    "corral.session_store.__main__",
    "corral.harness.__main__",
    "corral.sandbox_manager.__main__",
    "corral.credential_proxy.__main__",
    "corral.embedded_model.__main__",
)

LOADED = """
import importlib, sys
from corral import telemetry
for name in sys.argv[1:]:
    importlib.import_module(name)
telemetry.configure("probe")
print(sorted({m.split(".")[1] for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter",
    "opentelemetry.instrumentation"))}))
"""


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [(None, "[]"), ("http://127.0.0.1:1", "['exporter', 'instrumentation', 'sdk']")],
    ids=["no-endpoint", "endpoint"],
)
def test_a_service_that_does_not_export_never_loads_the_sdk(endpoint: str | None, expected: str) -> None:
    """The OpenTelemetry SDK, the OTLP exporter and the instrumentation packages (~15 MiB of modules in
    each process) are loaded only by a process that exports spans; every service imports only the API."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if endpoint is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    out = subprocess.run(
        [sys.executable, "-c", LOADED, *SERVICE_MAINS], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split("\n")[-2] == expected, out.stderr
