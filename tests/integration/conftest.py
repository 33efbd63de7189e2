"""What every integration package shares: a bare nats-server (no users) per test module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.devstack.nats import Nats
from corral.devstack.ports import Ports
from corral.devstack.state import StateDir


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ports = Ports.free()
    server = Nats(
        StateDir.at(Path(tmp_path_factory.mktemp("nats"))), ports.nats, ports.nats_monitor, authorization=False
    )
    server.launch()
    server.wait_ready(time.monotonic() + 20)
    try:
        yield server.url
    finally:
        server.stop()
