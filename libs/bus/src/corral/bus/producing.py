"""The ``PRODUCER`` span a stored record is sent under (OpenTelemetry messaging conventions), whose
context the record's headers carry, so a consumer's span is that span's child or links to it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace

from corral import telemetry

_tracer = telemetry.tracer(__name__)


def destination_family(subject: str) -> str:
    """A span name's destination: the subject's first two tokens (``corral.wake`` of
    ``corral.wake.<session_id>``), so span names stay few whatever ids subjects carry."""
    return ".".join(subject.split(".")[:2])


@contextmanager
def producer_span(subject: str, size: int) -> Iterator[trace.Span]:
    """``send <destination family>``: ``messaging.system=nats``, the subject and the body's size;
    the caller sets ``messaging.message.id`` once the record is stored."""
    attributes: dict[str, str | int] = {
        "messaging.system": "nats",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": subject,
        "messaging.message.body.size": size,
    }
    with _tracer.start_as_current_span(
        f"send {destination_family(subject)}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield span
