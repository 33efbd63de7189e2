"""The NATS server config the launcher writes: durability setting, users, and a cluster's nodes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from corral.contracts.subscribers import MIRRORED_STREAMS, mirror_delivery
from corral.devstack.configuration import (
    DEFAULT_SYNC_INTERVAL,
    StackConfig,
    nats_cluster_size,
    nats_replicas,
    sync_interval,
)
from corral.devstack.errors import DevstackError
from corral.devstack.nats import Nats
from corral.devstack.nats_accounts import CORRAL_ACCOUNT, SUBSCRIBERS_ACCOUNT, mirror_links, move_global_store
from corral.devstack.nats_users import ADMIN, SERVICE_USERS, SUBSCRIBER
from corral.devstack.ports import NATS_NODES_MAX, Ports
from corral.devstack.state import StateDir
from corral.devstack.topology import Topology


@pytest.mark.parametrize("raw", ["always", "500ms", "10s", "2m", "1h", " always "])
def test_a_sync_interval_is_always_or_a_duration(raw: str) -> None:
    assert sync_interval(raw) == raw.strip()


@pytest.mark.parametrize("raw", ["never", "10", "0s", "-1s", "2 m", "fast"])
def test_a_bad_sync_interval_names_the_variable(raw: str) -> None:
    with pytest.raises(DevstackError, match="CORRAL_NATS_SYNC_INTERVAL"):
        sync_interval(raw)


def test_the_default_syncs_every_write() -> None:
    assert sync_interval(None) == sync_interval("") == DEFAULT_SYNC_INTERVAL == "always"


def test_the_config_holds_the_interval_a_user_per_service_and_the_subscriber_in_its_own_account(
    tmp_path: Path,
) -> None:
    nats = Nats(StateDir.at(tmp_path), 4222, 8222, sync_interval="10s")
    config = nats.config()
    assert config["jetstream"] == {"sync_interval": "10s"}
    accounts = config["accounts"]
    assert isinstance(accounts, dict) and set(accounts) == {CORRAL_ACCOUNT, SUBSCRIBERS_ACCOUNT}
    corral, subscribers = accounts[CORRAL_ACCOUNT]["users"], accounts[SUBSCRIBERS_ACCOUNT]["users"]
    assert [u["user"] for u in corral] == [ADMIN, *SERVICE_USERS]
    assert [u["user"] for u in subscribers] == [SUBSCRIBER]
    users = [*corral, *subscribers]
    assert len({u["password"] for u in users}) == len(users)
    assert stat.S_IMODE(nats.state.nats_users_file.stat().st_mode) == 0o600
    assert Nats(StateDir.at(tmp_path), 4222, 8222).config()["accounts"] == accounts
    assert "accounts" not in Nats(StateDir.at(tmp_path), 4222, 8222, authorization=False).config()


@pytest.mark.parametrize(("raw", "size"), [(None, 1), ("", 1), ("1", 1), ("3", 3), (" 5 ", 5)])
def test_the_cluster_size_is_one_or_an_odd_number_of_servers(raw: str | None, size: int) -> None:
    assert nats_cluster_size(raw) == size


@pytest.mark.parametrize("raw", ["2", "4", "7", "0", "three"])
def test_a_bad_cluster_size_names_the_variable_and_why(raw: str) -> None:
    with pytest.raises(DevstackError, match=r"CORRAL_NATS_CLUSTER=.*odd number"):
        nats_cluster_size(raw)


def test_replicas_default_to_three_on_a_cluster_and_never_exceed_its_servers() -> None:
    assert nats_replicas(None, 1) == 1
    assert nats_replicas("", 3) == 3
    assert nats_replicas(None, 5) == 3
    assert nats_replicas("5", 5) == 5
    with pytest.raises(DevstackError, match=r"CORRAL_NATS_REPLICAS='3' .* 1 \(CORRAL_NATS_CLUSTER\)"):
        nats_replicas("3", 1)


def test_each_cluster_node_has_its_name_ports_store_and_routes_to_every_node(tmp_path: Path) -> None:
    config = StackConfig.read(
        environ={"CORRAL_NATS_CLUSTER": "3"}, harness_count=None, services=False, docker=False, log_level=None
    )
    topology = Topology(StateDir.at(tmp_path), config, Ports(), None)
    nodes = topology.nats_nodes()
    assert [n.name for n in nodes] == ["nats", "nats-2", "nats-3"]
    assert [(n.port, n.monitor_port, n.route_port) for n in nodes] == [
        (4222, 8222, 6222),
        (4223, 8223, 6223),
        (4224, 8224, 6224),
    ]
    assert len({n.store_dir for n in nodes} | {str(tmp_path / "data" / "nats")}) == 4  # apart from a single server's
    assert len({n.config_file for n in nodes}) == 3
    second = nodes[1].config()
    assert second["server_name"] == "nats-2"
    assert second["cluster"] == {
        "name": "corral",
        "listen": "127.0.0.1:6223",
        "routes": [f"nats-route://127.0.0.1:{port}" for port in (6222, 6223, 6224)],
    }
    assert topology.nats_url == "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"
    assert topology.config.nats_replicas == 3
    assert [n.waits_for_leader for n in nodes] == [False, False, True]


def test_a_single_server_has_no_cluster_block(tmp_path: Path) -> None:
    config = Nats(StateDir.at(tmp_path), 4222, 8222).config()
    assert "cluster" not in config and "server_name" not in config


def test_free_ports_leave_room_for_every_node_of_a_cluster() -> None:
    ports = Ports.free()
    blocks = [
        set(range(first, first + NATS_NODES_MAX)) for first in (ports.nats, ports.nats_monitor, ports.nats_cluster)
    ]
    others = {ports.postgres, ports.bao, ports.bao_cluster, ports.gateway, ports.embedded_model, ports.collector}
    assert not (blocks[0] & blocks[1]) and not (blocks[1] & blocks[2]) and not (blocks[0] & blocks[2])
    assert not (others & set().union(*blocks))


def test_corral_exports_to_the_subscribers_only_what_the_mirrors_of_two_streams_need() -> None:
    corral, subscribers = mirror_links()
    exported = {str(e.get("service") or e.get("stream")) for e in corral["exports"]}  # type: ignore[attr-defined]
    assert exported == {
        *(f"$JS.API.CONSUMER.CREATE.{s}" for s in MIRRORED_STREAMS),
        *(f"$JS.FC.{s}.>" for s in MIRRORED_STREAMS),
        *(f"{mirror_delivery(s)}.>" for s in MIRRORED_STREAMS),
    }
    assert all(e["accounts"] == [SUBSCRIBERS_ACCOUNT] for e in corral["exports"])  # type: ignore[attr-defined]
    assert subscribers["exports"] == [{"service": "$JS.API.>", "accounts": [CORRAL_ACCOUNT]}]


def test_a_store_made_before_the_accounts_becomes_corrals(tmp_path: Path) -> None:
    (tmp_path / "jetstream" / "$G" / "streams" / "CORRAL_SESSIONS").mkdir(parents=True)
    move_global_store(tmp_path)
    assert (tmp_path / "jetstream" / CORRAL_ACCOUNT / "streams" / "CORRAL_SESSIONS").is_dir()
    assert not (tmp_path / "jetstream" / "$G").exists()
    move_global_store(tmp_path)  # once only
    assert (tmp_path / "jetstream" / CORRAL_ACCOUNT / "streams" / "CORRAL_SESSIONS").is_dir()
