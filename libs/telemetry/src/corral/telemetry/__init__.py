"""OpenTelemetry and logging set-up, and trace context carried in bus message headers.

Every process calls ``configure(service_name)`` once, first thing in ``main()``.
"""

from corral.telemetry.logs import configure_logging
from corral.telemetry.propagation import carried_span, extract, inject, link_to
from corral.telemetry.tracing import configure, current_trace_id, enabled, shutdown, tracer

__all__ = [
    "carried_span",
    "configure",
    "configure_logging",
    "current_trace_id",
    "enabled",
    "extract",
    "inject",
    "link_to",
    "shutdown",
    "tracer",
]
