from __future__ import annotations

from typing import Any, get_args

from corral.contracts import rpc
from corral.contracts.api.events import HarnessEvent, ModelUsage, parse_event
from corral.contracts.operation import Operation
from corral.harness import events
from corral.harness.deltas import Preview
from corral.harness.events import wire
from corral.harness.store import BusStore
from tests.unit.harness.fakes import SESSION_ID, FakeDeltas


def test_every_harness_event_is_a_valid_public_event_without_processed_at() -> None:
    built = [
        events.status_running(),
        events.status_rescheduled(),
        events.status_idle("end_turn"),
        events.model_request_start(),
        events.model_request_end("sevt_start", usage=ModelUsage(input_tokens=3, output_tokens=4)),
        events.agent_message("sevt_msg", ["hello", "world"]),
        events.session_error("model_rate_limited_error", "slow down", "retrying"),
        events.requires_action(["sevt_a"]),
        events.tool_use(
            "sevt_t", "bash", {"command": "ls"}, evaluated_permission="allow", evaluation={"type": "always_allow"}
        ),
        events.custom_tool_use("sevt_c", "lookup", {"q": "x"}),
        events.tool_result("sevt_t", [{"type": "text", "text": "a.py"}], is_error=False),
    ]

    for event in built:
        assert isinstance(event, get_args(HarnessEvent)), "built typed, not as a dict"
        assert event.processed_at is None and event.id.startswith("sevt_")
        sent = wire(event)
        assert "processed_at" not in sent
        assert parse_event({**sent, "processed_at": "2026-01-01T00:00:00Z"}) == event.model_copy(
            update={"processed_at": "2026-01-01T00:00:00Z"}
        )
    assert len({e.id for e in built[:5]}) == 5


def test_idle_and_error_events_have_the_documented_shapes() -> None:
    assert wire(events.status_idle("retries_exhausted"))["stop_reason"] == {"type": "retries_exhausted"}
    error = wire(events.session_error("model_overloaded_error", "busy", "exhausted"))
    assert error["error"] == {
        "type": "model_overloaded_error",
        "message": "busy",
        "retry_status": {"type": "exhausted"},
    }
    end = wire(events.model_request_end("sevt_s", is_error=True))
    assert end["is_error"] is True
    assert end["model_usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


async def test_a_preview_starts_once_and_tracks_text_per_block() -> None:
    deltas = FakeDeltas()
    preview = Preview(deltas, SESSION_ID, "sevt_msg")

    await preview.on_text(0, "")
    await preview.on_text(0, "a")
    await preview.on_text(0, "b")
    await preview.on_text(1, "c")

    assert [f["type"] for f in deltas.frames] == ["event_start", "event_delta", "event_delta", "event_delta"]
    assert preview.texts == ("ab", "c")
    assert deltas.frames[-1]["delta"] == {"type": "content_delta", "index": 1, "content": {"type": "text", "text": "c"}}


def test_tool_events_have_the_documented_shapes() -> None:
    assert wire(events.requires_action(["sevt_a", "sevt_b"]))["stop_reason"] == {
        "type": "requires_action",
        "event_ids": ["sevt_a", "sevt_b"],
    }
    use = wire(
        events.tool_use(
            "sevt_t", "read", {"file_path": "x"}, evaluated_permission="ask", evaluation={"type": "always_ask"}
        )
    )
    assert {k: use[k] for k in ("type", "id", "name", "input", "evaluated_permission", "evaluation")} == {
        "type": "agent.tool_use",
        "id": "sevt_t",
        "name": "read",
        "input": {"file_path": "x"},
        "evaluated_permission": "ask",
        "evaluation": {"type": "always_ask"},
    }
    refused = wire(events.tool_use("sevt_u", "python", {}, evaluated_permission="deny", evaluation=None))
    assert refused["evaluated_permission"] == "deny" and "evaluation" not in refused
    custom = wire(events.custom_tool_use("sevt_c", "lookup", {"q": "x"}))
    assert (custom["type"], custom["name"], custom["input"]) == ("agent.custom_tool_use", "lookup", {"q": "x"})
    error = wire(events.tool_error("sevt_t", "boom"))
    assert (error["type"], error["tool_use_id"], error["content"], error["is_error"]) == (
        "agent.tool_result",
        "sevt_t",
        [{"type": "text", "text": "boom"}],
        True,
    )


def test_a_usage_event_shows_its_budget_even_when_there_is_none() -> None:
    usage = {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 0}
    sent = wire(events.session_usage(usage, None))
    assert sent["type"] == "session.usage" and sent["budget"] is None
    assert "processed_at" not in sent


class RecordingBus:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def call(self, op: Operation[Any, Any], request: Any, *, timeout: float | None = None) -> rpc.Appended:
        assert op is rpc.StoreOps.EVENTS_APPEND
        self.requests.append(request)
        return rpc.Appended(events=[], last_seq=1)


async def test_the_store_port_serialises_typed_events_once_into_the_append_request() -> None:
    bus = RecordingBus()
    built = [events.status_running(), events.model_request_start(), events.agent_message("sevt_m", ["hi"])]
    lease = rpc.Lease(holder="h", token="t")

    await BusStore(bus).append(SESSION_ID, built, lease=lease)  # type: ignore[arg-type]

    (request,) = bus.requests
    assert isinstance(request, rpc.AppendEvents)
    assert request.origin == "harness" and request.lease == lease
    assert request.events == [wire(e) for e in built]
    assert request.dedupe_keys == [e.id for e in built]
