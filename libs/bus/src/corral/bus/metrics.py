"""The bus operations a service answers (``Operations``): how many, how they ended, how long they took.

Every service that serves operations (the session-store, the sandbox-manager, the credential-proxy)
exposes these; ``operation`` is the descriptor's name (``events.append``...), ``outcome`` is ``ok``
or the error type answered (``invalid_request_error``, ``api_error``...).
"""

from __future__ import annotations

from corral.telemetry.metrics import SLOW_BUCKETS, counter, histogram

RPC_REQUESTS = counter(
    "corral_rpc_requests_total",
    "Bus operations this service answered, by operation and outcome (ok, or the error type answered).",
    ("operation", "outcome"),
)
RPC_DURATION = histogram(
    "corral_rpc_request_duration_seconds",
    "Time from receiving a bus operation to its answer, by operation.",
    ("operation",),
    buckets=SLOW_BUCKETS,
)
