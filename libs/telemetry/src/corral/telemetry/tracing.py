"""The tracer provider: OTLP over HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else no tracing.

Only OpenTelemetry's API is imported here; the SDK, the OTLP exporter and the instrumentation
packages (``corral.telemetry.export``, ~20 MiB of modules in every process) only when exporting.

Without an endpoint the process gets OpenTelemetry's no-op provider and no library instrumentation:
spans that would go nowhere cost nothing (no span objects, no wrappers around every query and HTTP
request). Trace context is then not propagated either: the ``traceparent`` a client sends is not
carried further, and ``span.*`` events have no ``corral_trace_id``.

The gateway adds FastAPI's instrumentation (``instrument_app``) when ``enabled()``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from opentelemetry import trace

from corral.settings import LogSettings, TelemetrySettings
from corral.telemetry.logs import configure_logging

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)

_provider: TracerProvider | None = None
_configured = False


def configure(service_name: str, *, settings: TelemetrySettings | None = None, logs: LogSettings | None = None) -> None:
    """Set up logging and tracing for this process (idempotent)."""
    global _provider, _configured
    configure_logging(service_name, logs or LogSettings())
    if _configured:
        return
    _configured = True
    settings = settings or TelemetrySettings()
    if not settings.otlp_endpoint:
        trace.set_tracer_provider(trace.NoOpTracerProvider())
        return
    from corral.telemetry import export  # the SDK, the exporter and the instrumentations: only to export

    provider = export.exporting_provider(service_name, settings.otlp_endpoint)
    trace.set_tracer_provider(provider)
    export.instrument_libraries(provider)
    _provider = provider


def enabled() -> bool:
    """Whether this process exports spans (``configure`` found an OTLP endpoint)."""
    return _provider is not None


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_trace_id() -> str | None:
    """The current span's trace id in hex (as Jaeger and the OTLP JSON show it), or None outside a trace."""
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def shutdown() -> None:
    """Flush pending spans; call on the way out of ``main()``."""
    if _provider is not None:
        _provider.shutdown()
