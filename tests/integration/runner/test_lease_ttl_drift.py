"""A harness whose lease TTL is not the one the lease bucket was made with (by the session-store, its
owner) refuses to start: exit status 2 and a line naming the difference, instead of running with
leases that expire at another pace than it renews them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.bus import Bus
from corral.contracts.subjects import lease_spec
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


async def test_a_harness_with_another_lease_ttl_than_the_bucket_refuses_to_start(nats_url: str) -> None:
    async with Bus.connect(NatsSettings(url=nats_url), name="session-store stand-in") as bus:
        await bus.ensure_key_value(lease_spec(10.0))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "ANTHROPIC_", "OTEL_"))}
    env |= {
        "CORRAL_NATS_URL": nats_url,
        "CORRAL_MODEL_BASE_URL": "http://127.0.0.1:1",
        "CORRAL_HARNESS_LEASE_TTL_S": "3",
    }
    result = subprocess.run(  # noqa: ASYNC221 (the harness process is what is tested)
        [sys.executable, "-m", "corral.harness"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "refused to start" in output, output
    assert "corral_leases" in output and "ttl_s is 10.0, expected 3.0" in output, output
