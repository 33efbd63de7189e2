"""Every service starts through ``corral.runner``: started as its own process with one invalid setting,
each prints one line naming the variable and exits with status 2, before it connects to anything."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

#: Enough for each service to get as far as its settings (the session-store requires a database URL,
#: the harness a model); nothing listens at these addresses, and nothing is reached.
BASE = {
    "CORRAL_POSTGRES_URL": "postgresql://corral@127.0.0.1:1/corral",
    "CORRAL_MODEL_BASE_URL": "http://127.0.0.1:1",
    "CORRAL_NATS_URL": "nats://127.0.0.1:1",
}

CASES = [
    ("gateway", "CORRAL_GATEWAY_PORT", "not-a-port"),
    ("gateway", "CORRAL_NATS_CONNECT_TIMEOUT_S", "-1"),
    ("session_store", "CORRAL_SESSION_STORE_STATE_CACHE_SIZE", "0"),
    ("harness", "CORRAL_HARNESS_CONCURRENCY", "0"),
    ("sandbox_manager", "CORRAL_SANDBOX_CPUS", "lots"),
    ("credential_proxy", "CORRAL_CREDENTIAL_PROXY_EGRESS_PORTS", "[0]"),
    ("sandbox_manager", "CORRAL_SANDBOX_ENGINE_RETRY_S", "0"),
    ("embedded_model", "CORRAL_EMBEDDED_MODEL_PORT", "70000"),
    ("embedded_model", "CORRAL_LOG_LEVEL", "LOUD"),
]


def _environment(variable: str, value: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "ANTHROPIC_", "OTEL_"))}
    return {**env, **BASE, variable: value}


@pytest.mark.parametrize(("module", "variable", "value"), CASES, ids=[f"{m}-{v}" for m, v, _ in CASES])
def test_one_invalid_setting_is_one_line_naming_it_and_exit_status_2(module: str, variable: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", f"corral.{module}"],
        env=_environment(variable, value),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1, result.stderr
    assert variable in lines[0], lines[0]
    assert lines[0].startswith(f"corral-{module.replace('_', '-')}: invalid settings"), lines[0]
    assert result.stdout == ""
