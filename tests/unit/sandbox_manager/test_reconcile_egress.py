"""Start-up reconciliation adopts a pooled sandbox with egress only when the socket directory it mounts
is the one this manager's credential-proxy gives its slot: one left on a shared Docker engine by
another stack's manager mounts that stack's credential-proxy's socket, and is removed instead.

A unit test: reproducing it on the real stack needs two stacks with their own credential-proxies on
one Docker engine, one of them stopped with its warm pool left running."""

from __future__ import annotations

from typing import Any, cast

from corral.contracts.egress import EgressPolicy
from corral.sandbox_manager.channel import AgentChannel
from corral.sandbox_manager.container_spec import (
    EGRESS,
    LABEL_CONFIG,
    LABEL_EGRESS_SLOT,
    LABEL_NETWORK,
    LABEL_POOL,
    ContainerInfo,
)
from corral.sandbox_manager.egress import EgressMount
from corral.sandbox_manager.reaper import Reaper
from corral.sandbox_manager.sandboxes import Launcher, Sandbox

OURS = "/var/lib/corral/egress"


class FakeDriver:
    scope = "default"

    def __init__(self, containers: list[ContainerInfo]) -> None:
        self.containers = containers
        self.removed: list[str] = []

    async def managed(self) -> list[ContainerInfo]:
        return self.containers

    async def remove(self, container_id: str) -> None:
        self.removed.append(container_id)


class FakeEgress:
    """This manager's credential-proxy: a slot's socket directory is under ``OURS``."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.closed: list[str] = []

    async def open(self, session_id: str, policy: EgressPolicy) -> EgressMount:
        self.opened.append(session_id)
        return EgressMount(host_directory=f"{OURS}/{session_id}")

    async def close(self, session_id: str) -> None:
        self.closed.append(session_id)


class AdoptingLauncher(Launcher):
    async def adopt(self, info: ContainerInfo, *, session_id: str | None) -> Sandbox:
        channel = cast(AgentChannel, type("Channel", (), {"closed": False})())
        return Sandbox(
            info.id,
            info.name,
            info.labels[LABEL_CONFIG],
            channel,
            ready_ms=0.0,
            network=EGRESS,
            egress_slot=info.labels.get(LABEL_EGRESS_SLOT),
        )


class Pool:
    def __init__(self) -> None:
        self.offered: list[str] = []

    def offer(self, sandbox: Sandbox) -> bool:
        self.offered.append(sandbox.container_id)
        return True


class Nothing:
    async def owner(self, container_id: str) -> None:
        return None

    async def sweep(self) -> int:
        return 0

    def reconciled(self) -> None:
        pass


def pooled(container_id: str, slot: str, mounted: str | None) -> ContainerInfo:
    labels = {LABEL_POOL: "true", LABEL_NETWORK: EGRESS, LABEL_CONFIG: "h", LABEL_EGRESS_SLOT: slot}
    return ContainerInfo(container_id, f"corral-sbx-{container_id}", labels, True, 0.0, egress_directory=mounted)


async def test_a_pooled_sandbox_mounting_another_credential_proxys_socket_is_removed_not_adopted() -> None:
    driver = FakeDriver(
        [
            pooled("mine", "pool-aaaa", f"{OURS}/pool-aaaa"),
            pooled("theirs", "pool-bbbb", "/tmp/other-stack/egress/pool-bbbb"),
            pooled("unmounted", "pool-cccc", None),
        ]
    )
    egress, pool, nothing = FakeEgress(), Pool(), cast(Any, Nothing())
    launcher = AdoptingLauncher(cast(Any, driver), start_timeout_s=5.0, egress=egress)
    reaper = Reaper(cast(Any, driver), launcher, nothing, cast(Any, pool), nothing, cast(Any, None), images=nothing)

    counts = await reaper.reconcile()

    assert pool.offered == ["mine"]
    assert sorted(driver.removed) == ["theirs", "unmounted"]
    assert counts["pooled"] == 1 and counts["removed"] == 2
    assert sorted(egress.closed) == ["pool-bbbb", "pool-cccc"]  # the slots re-opened here for the check
