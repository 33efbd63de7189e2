"""The harness's metrics (listed in the top README's "Metrics" table): turns, model requests and their
tokens, tool calls, compactions, leases and the wake-up backlog. Counted where the work happens; the
helpers below keep each call site to one line."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from corral.contracts.api.events import HarnessEvent, ModelUsage, SessionStatusIdle
from corral.telemetry.metrics import SLOW_BUCKETS, counter, gauge, histogram

TURNS = counter(
    "corral_harness_turns_total",
    "Turns ended (a session.status_idle logged), by stop reason: end_turn, requires_action, "
    "retries_exhausted, budget_reached.",
    ("stop_reason",),
)
TURN_OVERHEAD = histogram(
    "corral_harness_turn_overhead_seconds",
    "Time from taking a wake-up (its session's lease held) to logging the run's first model request: "
    "reading the log or a snapshot, deciding, listing MCP tools, compacting.",
    buckets=SLOW_BUCKETS,
)
MODEL_REQUESTS = counter(
    "corral_harness_model_requests_total",
    "Model requests (turns and compaction summaries), by model and outcome: ok, cancelled (an interrupt), "
    "or the error type (model_rate_limited_error, model_overloaded_error, model_request_failed_error...).",
    ("model", "outcome"),
)
MODEL_REQUEST_DURATION = histogram(
    "corral_harness_model_request_duration_seconds",
    "Time one model request takes, to its last streamed token, by model.",
    ("model",),
    buckets=SLOW_BUCKETS,
)
MODEL_TOKENS = counter(
    "corral_harness_model_tokens_total",
    "Tokens the model reported, by model and kind: input, output, cache_read, cache_creation.",
    ("model", "kind"),
)
TOOL_CALLS = counter(
    "corral_harness_tool_calls_total",
    "Tool calls answered, by kind (builtin: run in the sandbox; mcp; web: web_fetch and web_search) and "
    "outcome (ok, error).",
    ("kind", "outcome"),
)
COMPACTIONS = counter(
    "corral_harness_compactions_total",
    "Context compactions, by method: clear (old tool results cleared), summary (the head summarised).",
    ("method",),
)
LEASE_TAKEOVERS = counter(
    "corral_harness_lease_takeovers_total",
    "Leases this worker took after waiting for another holder to let go (or its lease to expire).",
)
LEASES_LOST = counter(
    "corral_harness_leases_lost_total",
    "Leases this worker lost while running a session (it stops; another worker resumes from the log).",
)
DECISIONS_AGAIN = counter(
    "corral_harness_decisions_again_total",
    "Steps decided again because the session's log moved on before they acted (their first append was fenced out).",
)
SESSIONS_ACTIVE = gauge("corral_harness_sessions_active", "Sessions this worker is running now.")
WAKES_PENDING = gauge(
    "corral_harness_wakes_pending",
    "Wake-ups queued and not yet delivered to any worker: the wake consumer's lag (sampled every few seconds).",
)

#: How often the wake-up backlog is sampled.
BACKLOG_SAMPLE_S = 5.0


def appended(batch: Sequence[HarnessEvent], *, run_started: float, first_request: bool) -> bool:
    """Count the turns ``batch`` ends; observe the run's overhead when it logs the run's first model
    request (``first_request``). Returns whether it did."""
    for event in batch:
        if isinstance(event, SessionStatusIdle):
            TURNS.labels(stop_reason=event.stop_reason.type).inc()
    if first_request and any(event.type == "span.model_request_start" for event in batch):
        TURN_OVERHEAD.observe(time.monotonic() - run_started)
        return True
    return False


@dataclass
class ModelCall:
    """What ``model_call``'s block reports: the usage of the reply it got."""

    usage: ModelUsage | None = None


@contextlib.contextmanager
def model_call(model: str) -> Iterator[ModelCall]:
    """Count and time the model request the block makes: ``ok`` once it returns, ``cancelled`` when
    it is cancelled, else the raised error's ``error_type`` (a ``ModelError``'s) or class name."""
    call = ModelCall()
    started = time.perf_counter()
    outcome = "failed"
    try:
        yield call
        outcome = "ok"
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    except Exception as exc:
        outcome = str(getattr(exc, "error_type", type(exc).__name__))
        raise
    finally:
        model_answered(model, outcome, started, call.usage)


def model_answered(model: str, outcome: str, started: float, usage: ModelUsage | None = None) -> None:
    """One model request ended (``started``: its ``time.perf_counter()``)."""
    MODEL_REQUESTS.labels(model=model, outcome=outcome).inc()
    MODEL_REQUEST_DURATION.labels(model=model).observe(time.perf_counter() - started)
    if usage is not None:
        for kind, tokens in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_input_tokens),
            ("cache_creation", usage.cache_creation_input_tokens),
        ):
            MODEL_TOKENS.labels(model=model, kind=kind).inc(tokens or 0)


def tool_answered(kind: str, batch: Sequence[HarnessEvent]) -> None:
    """A tool call of ``kind`` was answered with ``batch`` (its result last)."""
    is_error = bool(getattr(batch[-1], "is_error", False)) if batch else True
    TOOL_CALLS.labels(kind=kind, outcome="error" if is_error else "ok").inc()
