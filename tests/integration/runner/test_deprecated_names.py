"""A variable set under its old name (``corral.settings.renamed``) still configures a started service,
which says at start-up, as a warning, which name to use instead."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration

CASES = [
    ("session_store", "CORRAL_DATABASE_URL", "postgresql://corral@127.0.0.1:1/corral", "CORRAL_POSTGRES_URL"),
    ("session_store", "CORRAL_STATE_CACHE_SIZE", "5", "CORRAL_SESSION_STORE_STATE_CACHE_SIZE"),
    ("credential_proxy", "CORRAL_EGRESS_PORTS", "[443]", "CORRAL_CREDENTIAL_PROXY_EGRESS_PORTS"),
    ("sandbox_manager", "CORRAL_ENGINE_RETRY_S", "3", "CORRAL_SANDBOX_ENGINE_RETRY_S"),
]


@pytest.mark.parametrize(("module", "old", "value", "new"), CASES, ids=[old for _, old, _, _ in CASES])
def test_an_old_name_is_read_and_the_service_warns_naming_the_new_one(
    module: str, old: str, value: str, new: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "ANTHROPIC_", "OTEL_"))}
    env |= {"CORRAL_NATS_URL": "nats://127.0.0.1:1", "CORRAL_LOG_FORMAT": "text", old: value}
    if module == "session_store" and old != "CORRAL_DATABASE_URL":
        env["CORRAL_POSTGRES_URL"] = "postgresql://corral@127.0.0.1:1/corral"
    process = subprocess.Popen(
        [sys.executable, "-m", f"corral.{module}"], env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        assert process.stderr is not None
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "is deprecated" in line:
                break
    finally:
        process.kill()
        process.communicate(timeout=30)
    warnings = [line for line in seen if "is deprecated" in line]
    assert warnings, "".join(seen)
    assert "WARNING" in warnings[0] and old in warnings[0] and f"set {new} instead" in warnings[0], warnings[0]
    assert "invalid settings" not in "".join(seen)
