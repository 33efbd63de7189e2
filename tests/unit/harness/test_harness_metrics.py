"""The harness's metric helpers: turns counted by stop reason, the run's overhead observed once, model
requests counted by outcome with their tokens, tool calls by kind and outcome."""

from __future__ import annotations

import asyncio
import time

import pytest

from corral.contracts.api.events import ModelUsage
from corral.harness import events, metrics
from corral.telemetry.metrics import REGISTRY


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_turns_are_counted_by_stop_reason_and_the_overhead_once_per_run() -> None:
    ended = value("corral_harness_turns_total", stop_reason="end_turn")
    waiting = value("corral_harness_turns_total", stop_reason="requires_action")
    observed = value("corral_harness_turn_overhead_seconds_count")
    started = time.monotonic()
    start = events.model_request_start()
    assert metrics.appended([events.status_running(), start], run_started=started, first_request=True)
    assert not metrics.appended([events.status_idle("end_turn")], run_started=started, first_request=False)
    assert not metrics.appended([events.requires_action(["sevt_1"])], run_started=started, first_request=True)
    assert value("corral_harness_turns_total", stop_reason="end_turn") == ended + 1
    assert value("corral_harness_turns_total", stop_reason="requires_action") == waiting + 1
    assert value("corral_harness_turn_overhead_seconds_count") == observed + 1


def test_a_model_request_is_counted_with_its_tokens() -> None:
    ok = value("corral_harness_model_requests_total", model="unit-model", outcome="ok")
    output = value("corral_harness_model_tokens_total", model="unit-model", kind="output")
    with metrics.model_call("unit-model") as call:
        call.usage = ModelUsage(input_tokens=10, output_tokens=7, cache_read_input_tokens=3)
    assert value("corral_harness_model_requests_total", model="unit-model", outcome="ok") == ok + 1
    assert value("corral_harness_model_tokens_total", model="unit-model", kind="output") == output + 7


class Overloaded(Exception):
    error_type = "model_overloaded_error"


async def test_a_failed_or_cancelled_model_request_is_counted_by_what_ended_it() -> None:
    failed = value("corral_harness_model_requests_total", model="unit-model", outcome="model_overloaded_error")
    cancelled = value("corral_harness_model_requests_total", model="unit-model", outcome="cancelled")
    with pytest.raises(Overloaded), metrics.model_call("unit-model"):
        raise Overloaded

    async def interrupted() -> None:
        with metrics.model_call("unit-model"):
            await asyncio.Event().wait()

    task = asyncio.ensure_future(interrupted())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert value("corral_harness_model_requests_total", model="unit-model", outcome="model_overloaded_error") == (
        failed + 1
    )
    assert value("corral_harness_model_requests_total", model="unit-model", outcome="cancelled") == cancelled + 1


def test_tool_calls_are_counted_by_kind_and_outcome() -> None:
    ok = value("corral_harness_tool_calls_total", kind="builtin", outcome="ok")
    error = value("corral_harness_tool_calls_total", kind="web", outcome="error")
    metrics.tool_answered("builtin", [events.tool_result("sevt_1", [], is_error=False)])
    metrics.tool_answered("web", [events.tool_error("sevt_2", "refused")])
    assert value("corral_harness_tool_calls_total", kind="builtin", outcome="ok") == ok + 1
    assert value("corral_harness_tool_calls_total", kind="web", outcome="error") == error + 1
