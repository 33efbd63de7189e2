"""Key-value buckets and streams made on a three-node JetStream cluster by owners starting at once,
and records stored under one message id by writers at once: two replicas of a service (two
sandbox-managers, two session-stores) both ``ensure`` the buckets and streams they own, each through
its own node. Each must get it, whoever made it (before the fix, the one that lost the race could ask
for the bucket before its node knew of it, get "stream not found", and exit at start-up).

NATS only (``services=False``): three servers of the devstack's cluster mode, no Corral service.
"""

from __future__ import annotations

import asyncio
import os
import traceback
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from corral.bus import Bus
from corral.contracts import subjects
from corral.devstack.ports import Ports
from corral.devstack.stack import Stack

pytestmark = pytest.mark.integration

#: Fresh buckets raced for, one after another (the race is lost in a window of milliseconds; before
#: the fix round 0 failed). Each round makes a three-replica stream and waits for its leader: seconds.
ROUNDS = 10
#: Owners racing for each bucket, connected round-robin to the three nodes.
OWNERS = 6


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "ANTHROPIC_", "OTEL_"))}
    environ["CORRAL_NATS_CLUSTER"] = "3"
    stack = Stack(Path(tmp_path_factory.mktemp("buckets")), Ports.free(), environ=environ, services=False)
    try:
        stack.start(timeout=120)
        yield stack
    finally:
        stack.stop()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["bucket", "stream"])
async def test_owners_starting_together_on_different_nodes_all_get_it(nats_cluster: Stack, kind: str) -> None:
    settings = nats_cluster.nats_settings()
    nodes = nats_cluster.nats_nodes()
    assert settings.replicas == 3 and len(nodes) == 3
    async with AsyncExitStack() as connections:
        owners = [
            await connections.enter_async_context(
                Bus.connect(settings.model_copy(update={"url": nodes[n % len(nodes)].url}), name=f"owner-{n}")
            )
            for n in range(OWNERS)
        ]
        for round_ in range(ROUNDS):
            name = f"race_{round_}_{uuid.uuid4().hex[:8]}"
            if kind == "bucket":
                bucket = subjects.lease_spec(3.0).model_copy(update={"name": name})  # with expiry marks
                racing = [bus.ensure_key_value(bucket) for bus in owners]
            else:
                stream = subjects.WAKE_SPEC.model_copy(update={"name": name, "subjects": (f"{name}.>",)})
                racing = [bus.ensure_stream(stream) for bus in owners]
            results = await asyncio.gather(*racing, return_exceptions=True)
            failed = ["".join(traceback.format_exception(r)) for r in results if isinstance(r, BaseException)]
            assert not failed, f"round {round_}: {len(failed)} of {OWNERS} owners failed: {failed}"


@pytest.mark.timeout(300)
async def test_writers_storing_the_same_message_id_at_once_all_get_an_ack(nats_cluster: Stack) -> None:
    """Session-stores starting together each register the bootstrap key under the same message id.
    While the stream is still storing one writer's message, the others are answered "duplicate
    message id is in process" (10158); each must end with the one stored record's ack, not an error
    (before the fix such a store exited at start-up)."""
    settings = nats_cluster.nats_settings()
    nodes = nats_cluster.nats_nodes()
    async with AsyncExitStack() as connections:
        writers = [
            await connections.enter_async_context(
                Bus.connect(settings.model_copy(update={"url": nodes[n % len(nodes)].url}), name=f"writer-{n}")
            )
            for n in range(OWNERS)
        ]
        await writers[0].ensure_stream(subjects.CATALOG_SPEC)
        for round_ in range(ROUNDS * 3):
            msg_id = f"apikey:{uuid.uuid4().hex}"
            racing = [
                bus.publish(subjects.api_key_log(f"key_{n}_{round_}"), b"{}", msg_id=msg_id)
                for n, bus in enumerate(writers)
            ]
            results = await asyncio.gather(*racing, return_exceptions=True)
            failed = ["".join(traceback.format_exception(r)) for r in results if isinstance(r, BaseException)]
            assert not failed, f"round {round_}: {len(failed)} of {OWNERS} writers failed: {failed}"
            acks = [r for r in results if not isinstance(r, BaseException)]
            assert len({ack.seq for ack in acks}) == 1, f"round {round_}: stored more than once: {acks}"
            assert sum(not ack.duplicate for ack in acks) == 1
