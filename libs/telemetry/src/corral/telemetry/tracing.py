"""The tracer provider: OTLP over HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else no export."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from corral.settings import LogSettings, TelemetrySettings
from corral.telemetry.logs import configure_logging

_provider: TracerProvider | None = None


def configure(service_name: str, *, settings: TelemetrySettings | None = None, logs: LogSettings | None = None) -> None:
    """Set up logging and tracing for this process (idempotent)."""
    global _provider
    configure_logging(service_name, logs or LogSettings())
    if _provider is not None:
        return
    settings = settings or TelemetrySettings()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if settings.otlp_endpoint:
        endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _provider = provider


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def shutdown() -> None:
    """Flush pending spans; call on the way out of ``main()``."""
    if _provider is not None:
        _provider.shutdown()
