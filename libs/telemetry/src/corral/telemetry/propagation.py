"""W3C trace context in bus message headers (``traceparent``/``tracestate``)."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context, propagate


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to ``headers`` (in place) and return them."""
    propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context a message carried, or the ambient one when it carried none."""
    if not headers:
        return context.get_current()
    return propagate.extract(dict(headers))
