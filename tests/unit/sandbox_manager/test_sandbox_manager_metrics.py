"""The pool and container gauges follow the pools: a configuration no longer pooled loses its series."""

from __future__ import annotations

from corral.sandbox_manager import metrics
from corral.telemetry.metrics import REGISTRY


def test_pool_gauges_follow_the_pools() -> None:
    metrics.sample_pools({"spec-a": 2, "spec-b": 1}, serving=3)
    assert REGISTRY.get_sample_value("corral_sandbox_manager_pool_ready", {"config": "spec-a"}) == 2
    assert REGISTRY.get_sample_value("corral_sandbox_manager_containers_running") == 6
    metrics.sample_pools({"spec-b": 0}, serving=1)
    assert REGISTRY.get_sample_value("corral_sandbox_manager_pool_ready", {"config": "spec-a"}) is None
    assert REGISTRY.get_sample_value("corral_sandbox_manager_pool_ready", {"config": "spec-b"}) == 0
    assert REGISTRY.get_sample_value("corral_sandbox_manager_containers_running") == 1
