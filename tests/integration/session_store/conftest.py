"""Real NATS JetStream and a real Postgres, shared by the projection tests of one module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.devstack.nats import Nats
from corral.devstack.ports import Ports
from corral.devstack.postgres import EmbeddedPostgres
from corral.devstack.state import StateDir


@pytest.fixture(scope="module")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    state = StateDir.at(Path(tmp_path_factory.mktemp("projector")))
    ports = Ports.free()
    nats = Nats(state, ports.nats, ports.nats_monitor, authorization=False)
    postgres = EmbeddedPostgres(state, ports.postgres)
    try:
        nats.launch()
        postgres.launch()
        nats.wait_ready(time.monotonic() + 30)
        postgres.wait_ready(time.monotonic() + 60)
        yield nats.url, postgres.dsn
    finally:
        postgres.stop()
        nats.stop()
