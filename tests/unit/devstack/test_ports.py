"""Free-port picking: every port and block ``Ports.free`` picks is outside the kernel's ephemeral range
(an outgoing connection could otherwise take a port between the pick and its server's bind: a
gateway once failed to start on "address already in use" for its metrics port), and no two services'
metrics ports coincide, however many harnesses and replicas a stack runs."""

from __future__ import annotations

import pytest

from corral.devstack.configuration import StackConfig
from corral.devstack.errors import DevstackError
from corral.devstack.ports import (
    GATEWAYS_MAX,
    HARNESSES_MAX,
    METRICS_BLOCK,
    NATS_NODES_MAX,
    PICK_FROM,
    Ports,
    ephemeral_ports,
)
from corral.devstack.replicas import COUNT_VARIABLES, REPLICAS_MAX, Replicas
from corral.devstack.services import metrics_port, service_names

BLOCKS = {
    "nats": NATS_NODES_MAX,
    "nats_monitor": NATS_NODES_MAX,
    "nats_cluster": NATS_NODES_MAX,
    "gateway": GATEWAYS_MAX,
    "metrics": METRICS_BLOCK,
}


@pytest.mark.parametrize("attempt", range(20))
def test_free_ports_are_distinct_and_never_ones_the_kernel_gives_outgoing_connections(attempt: int) -> None:
    ephemeral = ephemeral_ports()
    used: list[int] = []
    for field, first in Ports.free().as_dict().items():
        block = range(first, first + BLOCKS.get(field, 1))
        assert block.start >= PICK_FROM and block.stop <= 65536, (field, block)
        assert not set(block) & set(ephemeral), f"{field} {block} is in the ephemeral range {ephemeral}"
        used.extend(block)
    assert len(used) == len(set(used)), "two ports or blocks overlap"


def test_every_service_has_its_own_metrics_port_within_the_block_at_the_largest_counts() -> None:
    replicas = Replicas.read(dict.fromkeys(COUNT_VARIABLES.values(), str(REPLICAS_MAX)))
    names = service_names(HARNESSES_MAX, True, replicas)
    ports = [metrics_port(9464, name) for name in names]
    assert len(set(ports)) == len(ports), sorted(ports)
    assert min(ports) == 9464 and max(ports) < 9464 + METRICS_BLOCK
    # the one-of-each stack keeps its documented ports
    assert [metrics_port(9464, n) for n in ("gateway", "embedded-model", "harness-1", "harness-2")] == [
        9464,
        9468,
        9469,
        9470,
    ]


def test_more_harnesses_than_the_metrics_block_holds_are_refused() -> None:
    with pytest.raises(DevstackError, match=f"CORRAL_HARNESS_COUNT must be from 1 to {HARNESSES_MAX}"):
        StackConfig.read(
            environ={"CORRAL_HARNESS_COUNT": str(HARNESSES_MAX + 1)},
            harness_count=None,
            services=True,
            docker=False,
            log_level=None,
        )
