"""Trace context across the bus: what ``inject`` writes, ``extract`` and ``carried_span`` read back,
and the links made where the sender's span is not the parent."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from corral.telemetry import carried_span, extract, inject, link_to

_tracer = TracerProvider().get_tracer(__name__)


def test_a_handler_s_span_is_a_child_of_the_sender_s() -> None:
    with _tracer.start_as_current_span("send") as sender:
        headers = inject({"Nats-Msg-Id": "x"})
    assert headers["Nats-Msg-Id"] == "x"
    sent = sender.get_span_context()
    assert headers["traceparent"].startswith(f"00-{sent.trace_id:032x}-{sent.span_id:016x}-")
    with _tracer.start_as_current_span("handle", context=extract(headers)) as handler:
        pass
    assert handler.get_span_context().trace_id == sent.trace_id
    assert handler.parent is not None and handler.parent.span_id == sent.span_id


def test_outside_a_span_nothing_is_injected_and_nothing_is_carried() -> None:
    headers = inject({})
    assert "traceparent" not in headers
    assert carried_span(headers) is None
    assert carried_span(None) is None
    assert carried_span({"traceparent": "00-not-a-trace-context"}) is None


def test_a_message_without_context_leaves_the_handler_in_the_ambient_trace() -> None:
    with (
        _tracer.start_as_current_span("ambient") as ambient,
        _tracer.start_as_current_span("handle", context=extract({})) as handler,
    ):
        pass
    assert handler.parent is not None and handler.parent.span_id == ambient.get_span_context().span_id


def test_carried_span_is_the_sender_s() -> None:
    with _tracer.start_as_current_span("send") as sender:
        headers = inject({})
    carried = carried_span(headers)
    assert carried is not None and carried.is_remote
    assert (carried.trace_id, carried.span_id) == (
        sender.get_span_context().trace_id,
        sender.get_span_context().span_id,
    )


def test_link_to_a_running_span_and_to_nothing() -> None:
    with _tracer.start_as_current_span("run") as run:
        pass
    [link] = link_to(run, **{"corral.link": "joined_run"})
    assert link.context.span_id == run.get_span_context().span_id
    assert link.attributes == {"corral.link": "joined_run"}
    assert link_to(None) == []
    assert link_to(trace.INVALID_SPAN_CONTEXT) == []
    with _tracer.start_as_current_span("joined", links=link_to(run.get_span_context())) as joined:
        pass
    assert [lk.context.span_id for lk in joined.links] == [run.get_span_context().span_id]
