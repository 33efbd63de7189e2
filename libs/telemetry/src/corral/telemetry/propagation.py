"""W3C trace context in bus message headers (``traceparent``/``tracestate``).

``inject`` on every publish and request (``corral.bus`` does it), ``extract`` where a message is
handled, so the handler's span is a child of the sender's. Where the sender's span is not the right
parent (a wake-up that joins a run already going, whose span belongs to an earlier trace),
``link_to`` makes a span link instead: the trace of the message points at the work that took it up.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context, propagate, trace


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to ``headers`` (in place) and return them."""
    propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context a message carried, or the ambient one when it carried none."""
    if not headers:
        return context.get_current()
    return propagate.extract(dict(headers))


def carried_span(headers: Mapping[str, str] | None) -> trace.SpanContext | None:
    """The span context a message carried (``traceparent``), or None when it carried none (or a bad one)."""
    if not headers:
        return None
    span = trace.get_current_span(propagate.extract(dict(headers))).get_span_context()
    return span if span.is_valid else None


def link_to(span: trace.Span | trace.SpanContext | None, **attributes: str) -> list[trace.Link]:
    """A one-link list for ``links=`` pointing at ``span`` (none when it is missing or invalid)."""
    if span is None:
        return []
    target = span.get_span_context() if isinstance(span, trace.Span) else span
    return [trace.Link(target, attributes=attributes or None)] if target.is_valid else []
