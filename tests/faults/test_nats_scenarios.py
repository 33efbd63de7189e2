"""The fault scenarios on a three-node JetStream cluster (``CORRAL_NATS_CLUSTER=3``, every stream and
bucket with three replicas) with two of every service (``conftest.TWO_OF_EACH``: two gateways, two
session-stores, two credential-proxies, two sandbox hosts, three harnesses): the same run as the
single-server scenarios (three SDK clients doing tool turns through both gateways, the fault, every
session finishing another turn, the checker). The faults: NATS's (reliability plan F8, F15, F20, a
full disk) and one replica of each service paused then killed (the gateway, the session-store that
projects and the one that follows, the lease-holding harness, a session's sandbox-manager, a
credential-proxy); Postgres killed; the Docker engine of a session's sandbox host killed. Each prints
its recovery time and the checker's counts.

One stack for the module (its own: the service scenarios' stack is a single server with one of each).
The store of ``cluster.SMALL_DISK_NODE`` is a tmpfs, so its disk can fill. Root is needed (the
partition's cgroup and ``iptables`` rules, the tmpfs), as for the stack's Docker engine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.devstack.stack import Stack
from tests.e2e.conftest import start_stack
from tests.faults import cluster
from tests.faults.conftest import STORE_TIMEOUT_S, TWO_OF_EACH
from tests.faults.nemesis import NATS_FAULTS, REPLICA_FAULTS, REPLICAS, SANDBOX_ENGINE, Fault
from tests.faults.scenario import once, run, seeded
from tests.faults.test_scenarios import SOAK_SECONDS, verify

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state_dir = tmp_path_factory.mktemp("faults-cluster")
    with cluster.store_on_tmpfs(state_dir), contextlib.ExitStack() as stopping:
        stack = start_stack(
            state_dir,
            gateway={"CORRAL_GATEWAY_STORE_TIMEOUT_S": str(STORE_TIMEOUT_S)},
            environ={"CORRAL_NATS_CLUSTER": "3", **TWO_OF_EACH},
        )
        stopping.callback(stack.stop)
        assert [node.name for node in stack.nats_nodes()] == ["nats", "nats-2", "nats-3"]
        assert len(stack.gateway_urls) == 2
        yield stack


async def _scenario(stack: Stack, fault: Fault, tmp_path: Path, report: list[str]) -> None:
    verify(await run(stack, once(fault), dump_to=tmp_path / "history.jsonl"), report)


async def test_f15_the_session_logs_leader_killed_mid_turn_and_restarted_loses_nothing(
    cluster_stack: Stack, tmp_path: Path, report: list[str]
) -> None:
    await _scenario(cluster_stack, Fault("kill", "nats-leader"), tmp_path, report)


async def test_a_follower_node_killed_and_restarted_on_its_disk_catches_up_and_loses_nothing(
    cluster_stack: Stack, tmp_path: Path, report: list[str]
) -> None:
    await _scenario(cluster_stack, Fault("kill", "nats-follower"), tmp_path, report)


async def test_f8_all_three_nodes_killed_and_restarted_lose_nothing_acknowledged(
    cluster_stack: Stack, tmp_path: Path, report: list[str]
) -> None:
    await _scenario(cluster_stack, Fault("kill", "nats-all"), tmp_path, report)


async def test_f20_the_leader_partitioned_from_the_other_nodes_then_healed_loses_nothing(
    cluster_stack: Stack, tmp_path: Path, report: list[str]
) -> None:
    await _scenario(cluster_stack, Fault("partition", "nats-leader"), tmp_path, report)


async def test_one_nodes_disk_full_loses_and_drops_nothing_and_the_cluster_goes_on(
    cluster_stack: Stack, tmp_path: Path, report: list[str]
) -> None:
    await _scenario(cluster_stack, Fault("disk-full", cluster.SMALL_DISK_NODE), tmp_path, report)


async def test_postgres_killed_mid_turn_and_restarted_loses_nothing_and_the_projection_catches_up(
    cluster_stack: Stack, tmp_path: Path, report: list[str]
) -> None:
    await _scenario(cluster_stack, Fault("kill", "postgres"), tmp_path, report)


async def test_a_sandbox_hosts_docker_engine_killed_mid_turn_and_restarted_strands_no_session(
    cluster_stack: Stack, tmp_path: Path, report: list[str]
) -> None:
    """The engine of a session's host SIGKILLed and started again: its containers stop with it, and the
    sandbox-manager serves the next call (a workspace it cannot keep is reported lost, not hidden)."""
    await _scenario(cluster_stack, Fault("kill", SANDBOX_ENGINE), tmp_path, report)


@pytest.mark.parametrize("target", REPLICAS)
async def test_one_replica_of_a_service_paused_then_killed_mid_turn_loses_duplicates_and_strands_nothing(
    cluster_stack: Stack, target: str, tmp_path: Path, report: list[str]
) -> None:
    """One of the two (or three) replicas, its pause then its kill in one run (as on the single server):
    the clients fail over to the other gateway, with the same ``Idempotency-Key``, when theirs fails."""
    schedule = once(Fault("pause", target), Fault("kill", target))
    verify(await run(cluster_stack, schedule, dump_to=tmp_path / "history.jsonl"), report)


@pytest.mark.timeout(SOAK_SECONDS + 900)
async def test_seeded_soak_of_nats_and_service_faults_on_the_cluster_breaks_no_invariant(
    cluster_stack: Stack, tmp_path: Path, report: list[str]
) -> None:
    """As the single-server soak (``CORRAL_SOAK_SECONDS``, ``CORRAL_SOAK_SEED``), drawing from the
    cluster's faults as well as every replica's."""
    seed = int(os.environ.get("CORRAL_SOAK_SEED") or secrets.randbelow(2**32))
    report.append(f"cluster soak: seed {seed} (CORRAL_SOAK_SEED={seed} replays it), {SOAK_SECONDS:g} s")
    schedule = seeded(seed, SOAK_SECONDS, (*NATS_FAULTS, *REPLICA_FAULTS))
    verify(await run(cluster_stack, schedule, dump_to=tmp_path / "history.jsonl"), report)
