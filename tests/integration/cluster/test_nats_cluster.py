"""Corral on a three-node JetStream cluster (``CORRAL_NATS_CLUSTER=3``): its streams and buckets are
made with three replicas, every service is given the whole server list, and when the node that leads
the session log is killed, sessions go on through the SDK and no acknowledged event is lost.

The stack is the devstack's own (ports from ``Ports.free``, a private state directory), with the
services but no Docker engine: the turns here are the embedded model's text answers, no tool runs.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from corral.bus import Bus
from corral.contracts import subjects
from corral.devstack.ports import Ports
from corral.devstack.probes import http
from corral.devstack.stack import Stack
from tests.e2e.flows import all_events, run_turn, send_text
from tests.waiting import eventually

pytestmark = pytest.mark.integration

#: Every stream and bucket Corral makes, by its JetStream stream name.
CORRAL_STREAMS = (
    subjects.SESSIONS_STREAM,
    subjects.CATALOG_STREAM,
    subjects.WAKE_STREAM,
    f"KV_{subjects.lease_spec(1.0).name}",
)


@pytest.fixture(scope="module")
def cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "ANTHROPIC_", "OTEL_"))}
    environ["CORRAL_NATS_CLUSTER"] = "3"
    stack = Stack(
        Path(tmp_path_factory.mktemp("cluster")), Ports.free(), environ=environ, harness_count=1, docker=False
    )
    try:
        stack.start(timeout=120)
        yield stack
    finally:
        stack.stop()


def _streams(stack: Stack) -> dict[str, dict[str, Any]]:
    """What a live node's monitoring says of every stream: ``{name: stream detail}``."""
    for candidate in stack.nats_nodes():
        if not candidate.is_running():
            continue
        response = http("GET", f"{candidate.monitor_url}/jsz?streams=true&config=true")
        if response is not None and response.status == 200:
            accounts = response.json().get("account_details") or []
            return {s["name"]: s for account in accounts for s in account.get("stream_detail") or []}
    raise AssertionError("no NATS node answers /jsz")


def test_up_runs_three_servers_as_one_cluster_and_the_services_connect_to_all(cluster_stack: Stack) -> None:
    nodes = cluster_stack.nats_nodes()
    assert [node.name for node in nodes] == ["nats", "nats-2", "nats-3"]
    assert all(node.is_running() for node in nodes)
    assert cluster_stack.nats_url == ",".join(node.url for node in nodes)
    env = cluster_stack.service("session-store", cluster_stack.service_context()).env or {}
    assert env["CORRAL_NATS_URL"] == cluster_stack.nats_url and env["CORRAL_NATS_REPLICAS"] == "3"


def test_corrals_streams_and_buckets_have_three_replicas(cluster_stack: Stack) -> None:
    streams = _streams(cluster_stack)
    for name in CORRAL_STREAMS:
        assert streams[name]["config"]["num_replicas"] == 3, name
        cluster = streams[name]["cluster"]
        assert cluster["leader"] in {node.name for node in cluster_stack.nats_nodes()}, cluster
        assert len(cluster.get("replicas") or []) == 2, cluster  # the leader and two followers


async def test_the_session_log_takes_atomic_batches_on_the_cluster(cluster_stack: Stack) -> None:
    # (the monitoring's /jsz leaves allow_atomic out of a clustered stream's config: ask JetStream)
    async with Bus.connect(cluster_stack.nats_settings(), name="tests") as bus:
        assert (await bus.stream_spec(subjects.SESSIONS_STREAM)).allow_atomic is True


async def test_killing_the_session_logs_leader_loses_nothing_acknowledged(cluster_stack: Stack) -> None:
    async with anthropic.AsyncAnthropic(**cluster_stack.client_kwargs(), max_retries=8) as client:
        await _a_session_outlives_its_logs_leader(cluster_stack, client)


async def _a_session_outlives_its_logs_leader(cluster_stack: Stack, client: anthropic.AsyncAnthropic) -> None:
    agent = await client.beta.agents.create(name="cluster", model="claude-sonnet-4-6")
    environment = await client.beta.environments.create(name="cluster")
    session = await client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    await run_turn(client, session.id, "before the leader goes")
    acknowledged = [event.id for event in await all_events(client, session.id)]
    assert acknowledged

    leader = _streams(cluster_stack)[subjects.SESSIONS_STREAM]["cluster"]["leader"]
    cluster_stack.kill(leader, signal.SIGKILL)

    async def new_leader() -> bool:
        return _streams(cluster_stack)[subjects.SESSIONS_STREAM]["cluster"].get("leader") not in (None, leader)

    await eventually(new_leader, timeout=30)
    # appends go on: each sent event is acknowledged, and the turns it starts run to the end
    sent = [await send_text(client, session.id, f"after the leader went, {i}") for i in range(3)]
    # a POST of several events is one atomic batch on the new leader: stored whole, in order
    texts = [f"batched after the leader went, {i}" for i in range(5)]
    batched = await client.beta.sessions.events.send(
        session.id,
        events=[{"type": "user.message", "content": [{"type": "text", "text": t}]} for t in texts],
    )
    assert batched.data is not None and len(batched.data) == len(texts)
    events = await run_turn(client, session.id, "and one more")
    assert events[-1].type == "session.status_idle"

    after = [event.id for event in await all_events(client, session.id)]
    missing = [event_id for event_id in acknowledged if event_id not in after]
    assert not missing, f"acknowledged before {leader} was killed, gone after: {missing}"
    assert after[: len(acknowledged)] == acknowledged  # in the same order, first
    assert all(event.id in after for event in sent)
    batch_ids = [event.id for event in batched.data]
    start = after.index(batch_ids[0])
    assert after[start : start + len(batch_ids)] == batch_ids  # whole, in order, nothing in between
    # and a new session can be made and run without the dead node
    other = await client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    assert (await run_turn(client, other.id, "a new session"))[-1].type == "session.status_idle"
