"""Replica counts: names, ports, metrics ports and each replica's environment (no processes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from corral.devstack.configuration import StackConfig, read_model
from corral.devstack.errors import DevstackError
from corral.devstack.openbao import AppRoleLogin
from corral.devstack.ports import METRICS_BLOCK
from corral.devstack.replicas import Replicas, host_data_root
from corral.devstack.services import ServiceContext, is_service_name, kind_of, metrics_port, service_environment
from corral.devstack.services import service_names as names_of
from corral.devstack.stack import Stack

TWO_OF_EACH = {
    "CORRAL_GATEWAY_COUNT": "2",
    "CORRAL_SESSION_STORE_COUNT": "2",
    "CORRAL_CREDENTIAL_PROXY_COUNT": "2",
    "CORRAL_SANDBOX_HOSTS": "2",
}


def _ctx(**changes: object) -> ServiceContext:
    ctx = ServiceContext(
        nats_url="nats://127.0.0.1:4222",
        database_url="postgresql://corral:pw@127.0.0.1:55432/corral",
        api_key="sk-corral-dev-x",
        gateway_port=8080,
        embedded_model_port=8090,
        openbao_addr="http://127.0.0.1:8200",
        openbao_login=AppRoleLogin("role", "secret"),
        model=read_model({}, 8090),
        docker_host="unix:///run/a.sock",
        sandbox_hosts=("unix:///run/a.sock", "unix:///run/b.sock"),
        metrics_port=9464,
    )
    return dataclasses.replace(ctx, **changes)  # type: ignore[arg-type]


def test_the_default_counts_are_the_one_of_each_stack() -> None:
    config = StackConfig.read(environ={}, harness_count=None, services=True, docker=True, log_level=None)
    assert names_of(config.harness_count, True, config.replicas) == names_of(1, embedded_model=True)
    assert names_of(2, True) == [
        "embedded-model",
        "session-store",
        "gateway",
        "harness-1",
        "harness-2",
        "sandbox-manager",
        "credential-proxy",
    ]


def test_two_of_each_are_named_kind_n_and_each_has_its_own_metrics_port() -> None:
    names = names_of(3, True, Replicas.read(TWO_OF_EACH))
    for extra in ("session-store-2", "gateway-2", "harness-3", "sandbox-manager-2", "credential-proxy-2"):
        assert extra in names and is_service_name(extra)
    assert [kind_of(n) for n in ("gateway-2", "session-store-2", "harness-3", "embedded-model")] == [
        "gateway",
        "session-store",
        "harness",
        "embedded-model",
    ]
    five = names_of(11, True, Replicas.read(dict.fromkeys(TWO_OF_EACH, "5")))
    ports = [metrics_port(9464, n) for n in five]
    assert len(set(ports)) == len(ports) and max(ports) < 9464 + METRICS_BLOCK
    assert not any(is_service_name(n) for n in ("gateway-1", "harness", "embedded-model-2", "docker-2"))


@pytest.mark.parametrize("raw", ["0", "6", "two", "-1"])
def test_a_count_out_of_range_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(DevstackError, match=r"CORRAL_GATEWAY_COUNT=.* is not a number from 1 to 5"):
        Replicas.read({"CORRAL_GATEWAY_COUNT": raw})


def test_gateway_n_listens_on_the_next_port_and_sandbox_host_n_drives_its_own_engine() -> None:
    assert service_environment("gateway", _ctx(), base={})["CORRAL_GATEWAY_PORT"] == "8080"
    assert service_environment("gateway-2", _ctx(), base={})["CORRAL_GATEWAY_PORT"] == "8081"
    first = service_environment("sandbox-manager", _ctx(), base={})
    second = service_environment("sandbox-manager-2", _ctx(), base={})
    assert first["CORRAL_DOCKER_HOST"] == "unix:///run/a.sock" and "CORRAL_SANDBOX_HOST_ID" not in first
    assert second["CORRAL_DOCKER_HOST"] == "unix:///run/b.sock"
    assert second["CORRAL_SANDBOX_HOST_ID"] == "sandbox-host-2"
    assert second["CORRAL_SANDBOX_METRICS_PORT"] != first["CORRAL_SANDBOX_METRICS_PORT"]
    assert host_data_root(Path("/var/tmp/docker"), 2) == Path("/var/tmp/docker-host-2")


def test_a_stack_of_two_of_each_lists_every_gateway_and_engine(tmp_path: Path) -> None:
    stack = Stack(tmp_path, environ=TWO_OF_EACH | {"CORRAL_DOCKER_DATA_ROOT": str(tmp_path / "d")}, docker=True)
    assert stack.gateway_urls == [
        f"http://127.0.0.1:{stack.ports.gateway}",
        f"http://127.0.0.1:{stack.ports.gateway + 1}",
    ]
    [engine] = stack.host_engines()
    assert (engine.name, engine.data_root) == ("docker-2", tmp_path / "d-host-2")
    assert engine.socket != stack.docker_engine.socket
    assert [c.name for c in stack.infra()][-2:] == ["docker", "docker-2"]
    assert stack.service_context().sandbox_hosts == (stack.docker_engine.host, engine.host)
