"""A gateway whose idempotency TTL is not the one its KV bucket was made with (by an earlier gateway
with other settings) refuses to start like every other service: one line naming the difference and
what to do, exit status 2, no traceback (not a start that logs uvicorn's failed lifespan and exits 0)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.bus import Bus
from corral.contracts.subjects import idempotency_spec
from corral.devstack.nats import Nats
from corral.devstack.ports import Ports
from corral.devstack.state import StateDir
from corral.settings import NatsSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    ports = Ports.free()
    server = Nats(StateDir.at(tmp_path / "nats"), ports.nats, ports.nats_monitor, authorization=False)
    server.launch()
    server.wait_ready(time.monotonic() + 20)
    try:
        yield server.url
    finally:
        server.stop()


async def test_a_gateway_with_another_idempotency_ttl_than_its_bucket_refuses_to_start(nats_url: str) -> None:
    async with Bus.connect(NatsSettings(url=nats_url), name="an earlier gateway") as bus:
        await bus.ensure_key_value(idempotency_spec(86400.0))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "ANTHROPIC_", "OTEL_"))}
    env |= {
        "CORRAL_NATS_URL": nats_url,
        "CORRAL_GATEWAY_PORT": "0",
        "CORRAL_GATEWAY_IDEMPOTENCY_TTL_S": "60",
        "CORRAL_LOG_FORMAT": "text",
    }
    result = subprocess.run(  # noqa: ASYNC221 (the gateway process is what is tested)
        [sys.executable, "-m", "corral.gateway"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    refusals = [line for line in output.splitlines() if "refused to start" in line]
    assert len(refusals) == 1, output
    assert "corral_idempotency" in refusals[0] and "ttl_s is 86400.0, expected 60.0" in refusals[0], output
    assert "Traceback" not in output and "Application startup failed" not in output, output
