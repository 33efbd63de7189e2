"""The sandbox-manager's metrics (listed in the top README's "Metrics" table): the warm pools, the
containers running, provisioning and tool executions. Its bus operations are counted by
``corral_rpc_*`` (``corral.bus``)."""

from __future__ import annotations

from corral.telemetry.metrics import SLOW_BUCKETS, counter, gauge, histogram, set_labelled

POOL_READY = gauge(
    "corral_sandbox_manager_pool_ready",
    "Warm sandboxes ready to be claimed, by environment configuration (its spec hash), against "
    "CORRAL_SANDBOX_POOL_SIZE each (sampled every few seconds).",
    ("config",),
)
CONTAINERS_RUNNING = gauge(
    "corral_sandbox_manager_containers_running",
    "Sandbox containers this manager runs: serving a session, or warm in a pool (sampled every few seconds).",
)
PROVISION_DURATION = histogram(
    "corral_sandbox_manager_provision_duration_seconds",
    "Time from a session asking for a sandbox to one serving it, by source: warm (claimed from a pool), cold "
    "(a container started for it; an environment image built first counts too).",
    ("source",),
    buckets=SLOW_BUCKETS,
)
EXECS = counter(
    "corral_sandbox_manager_execs_total",
    "Tool calls answered, by outcome: ok, error (the tool failed, or the sandbox did), not_ready (the sandbox "
    "was still being prepared; the call was not run), replayed (answered from the recorded outcome).",
    ("outcome",),
)

#: How often the pool and container gauges are sampled.
SAMPLE_S = 2.0


def sample_pools(pool_sizes: dict[str, int], serving: int) -> None:
    """Set the pool and container gauges (on the event loop, which owns the pools)."""
    set_labelled(POOL_READY, {config: float(ready) for config, ready in pool_sizes.items()})
    CONTAINERS_RUNNING.set(serving + sum(pool_sizes.values()))
