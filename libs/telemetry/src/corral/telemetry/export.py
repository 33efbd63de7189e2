"""Exporting spans: the SDK's tracer provider with a batch processor posting OTLP over HTTP, and the
asyncpg and httpx instrumentations. ``corral.telemetry.tracing.configure`` imports this module only
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: a process that does not export never loads the SDK.

A collector that is down or slow never holds up or breaks a service: spans are queued (bounded;
full means dropped) and exported from the batch processor's own thread with a short timeout, and
the exporter says once that the collector stopped answering (and once that it answers again)
instead of logging every failed batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

logger = logging.getLogger(__name__)

#: Spans waiting for export; more are dropped (a dead collector costs at most this much memory).
MAX_QUEUE = 2048
#: How often the batch processor exports, and how long one export may take (retries included).
SCHEDULE_DELAY_MS = 1000
EXPORT_TIMEOUT_S = 2.0

#: The exporter's own loggers: they log every failed batch (an error a second with the collector
#: down); ``QuietExporter`` says it once instead.
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http",
)


class QuietExporter(SpanExporter):
    """An exporter that logs a warning when exports start failing and an info line when they work
    again: one line per change, not one per batch."""

    def __init__(self, inner: SpanExporter, endpoint: str) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self.failing = False
        self.dropped = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter bug must not end the processor's thread
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            if self.failing:
                logger.info(
                    "trace export works again",
                    extra={"fields": {"endpoint": self.endpoint, "dropped_spans": self.dropped}},
                )
                self.failing = False
                self.dropped = 0
            return result
        self.dropped += len(spans)
        if not self.failing:
            self.failing = True
            logger.warning(
                "trace export failed; dropping spans until the collector answers",
                extra={"fields": {"endpoint": self.endpoint}},
            )
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def span_processor(endpoint: str) -> BatchSpanProcessor:
    """The batch processor that exports to ``endpoint`` (an OTLP/HTTP base URL) without ever blocking."""
    for name in _EXPORTER_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    url = endpoint.rstrip("/") + "/v1/traces"
    exporter = QuietExporter(OTLPSpanExporter(endpoint=url, timeout=EXPORT_TIMEOUT_S), url)
    return BatchSpanProcessor(
        exporter,
        max_queue_size=MAX_QUEUE,
        schedule_delay_millis=SCHEDULE_DELAY_MS,
        export_timeout_millis=int(EXPORT_TIMEOUT_S * 1000),
    )


def exporting_provider(service_name: str, endpoint: str) -> TracerProvider:
    """A tracer provider that exports this process's spans to ``endpoint`` as ``service_name``."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(span_processor(endpoint))
    return provider


def instrument_libraries(provider: TracerProvider) -> None:
    """Client spans for every asyncpg query and every httpx request (the instrumentation packages),
    with the stable HTTP conventions (``http.request.method``...) unless the environment chose."""
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")  # noqa: TID251 - the packages read only this
    asyncpg = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]  # untyped in the package
    if not asyncpg.is_instrumented_by_opentelemetry:
        asyncpg.instrument(tracer_provider=provider)
    httpx = HTTPXClientInstrumentor()
    if not httpx.is_instrumented_by_opentelemetry:
        httpx.instrument(tracer_provider=provider)
