"""OpenTelemetry and logging set-up, and trace context carried in bus message headers.

Every process calls ``configure(service_name)`` once, first thing in ``main()``.
"""

from corral.telemetry.logs import configure_logging
from corral.telemetry.propagation import extract, inject
from corral.telemetry.tracing import configure, shutdown, tracer

__all__ = ["configure", "configure_logging", "extract", "inject", "shutdown", "tracer"]
