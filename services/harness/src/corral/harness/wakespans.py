"""The span of a wake-up's processing, following the messaging conventions: a child of the span
that published it (the trace context in its headers). A wake-up taken up by a run already going
gets one too, in its own trace, linked to that run's span (whose parent is the wake-up that
started it), so the trace shows which work took its input."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace

from corral import telemetry
from corral.contracts import rpc, subjects
from corral.harness.wakeports import WakeDelivery

_tracer = telemetry.tracer("corral.harness.wake")


def processing(wake: rpc.Wake, delivery: WakeDelivery) -> AbstractContextManager[trace.Span]:
    """``process corral.wake.{session_id}`` of a wake-up that starts a run."""
    return _span(wake, delivery, links=None, joined=False)


def joining(wake: rpc.Wake, delivery: WakeDelivery, running: trace.SpanContext | None) -> None:
    """Record the span of a wake-up taken up by the run whose span is ``running``."""
    with _span(wake, delivery, links=telemetry.link_to(running, **{"corral.link": "joined_run"}), joined=True):
        pass


def _span(
    wake: rpc.Wake, delivery: WakeDelivery, *, links: list[trace.Link] | None, joined: bool
) -> AbstractContextManager[trace.Span]:
    attributes: dict[str, Any] = {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.destination.name": subjects.wake(wake.session_id),
        "messaging.destination.template": subjects.wake("{session_id}"),
        "corral.session_id": wake.session_id,
    }
    if joined:
        attributes["corral.joined_run"] = True
    return _tracer.start_as_current_span(
        "process corral.wake.{session_id}",
        context=telemetry.extract(delivery.headers),
        kind=trace.SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
    )
