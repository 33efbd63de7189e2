"""The session-store's metrics (listed in the top README's "Metrics" table): appends to the log and
the catalog, and how far the Postgres projection is behind them. Its bus operations are counted by
``corral_rpc_*`` (``corral.bus``)."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from corral.contracts.api.errors import ApiError
from corral.telemetry.metrics import counter, gauge, histogram

APPEND_DURATION = histogram(
    "corral_session_store_append_duration_seconds",
    "Time one append takes (the status check, the fenced publish of its records, their acks), by stream "
    "(sessions, catalog).",
    ("stream",),
)
APPENDS = counter(
    "corral_session_store_appends_total",
    "Appends by stream and outcome: ok, refused (an error the caller is answered with: a conflict, a status "
    "the session is not in), failed (anything else).",
    ("stream", "outcome"),
)
PROJECTION_LAG = gauge(
    "corral_session_store_projection_lag_records",
    "Stream sequences the Postgres projection has not applied yet, by stream (sampled every few seconds).",
    ("stream",),
)
PROJECTION_ERRORS = counter(
    "corral_session_store_projection_errors_total",
    "Records the projection could not apply and skipped (their row alone stays behind; see projection_errors).",
)

P = ParamSpec("P")
R = TypeVar("R")


def timed_append(stream: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate an append to ``stream``: count it by outcome and observe how long it took."""

    def decorate(append: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(append)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            outcome = "failed"
            try:
                result = await append(*args, **kwargs)
                outcome = "ok"
                return result
            except ApiError:
                outcome = "refused"
                raise
            finally:
                APPENDS.labels(stream=stream, outcome=outcome).inc()
                APPEND_DURATION.labels(stream=stream).observe(time.perf_counter() - started)

        return timed

    return decorate
