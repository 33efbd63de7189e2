"""``compose/``: every file is a valid Compose file (the Compose Specification's JSON schema, as
check-jsonschema ships it: no download at test time), NATS's config and command lines are ones
nats-server accepts, and the cluster option (``cluster.yaml``) runs three servers routed to each
other while every Corral service gets all three and the same replica count."""

from __future__ import annotations

import importlib.resources
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from corral.devstack.components import find_binary

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
FILES = ("compose.yaml", "cluster.yaml")
NODES = ("nats", "nats-2", "nats-3")


def _load(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((COMPOSE / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def _schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text())
    assert isinstance(schema, dict)
    return schema


def _corral_services(base: dict[str, Any]) -> list[str]:
    """The services Corral's image runs (``python -m corral.<service>``; not its one-shot set-up steps)."""
    return [
        name
        for name, service in base["services"].items()
        if service.get("image") == "corral:dev" and service["command"][:2] == ["python", "-m"]
    ]


@pytest.mark.parametrize("name", FILES)
def test_each_compose_file_follows_the_compose_specification(name: str) -> None:
    validator = jsonschema.Draft7Validator(_schema())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(_load(name))]
    assert not errors, f"compose/{name}: " + "; ".join(errors)


def test_the_schema_refuses_what_compose_would() -> None:
    """The validation is not vacuous: a command that is not a string list is refused."""
    broken = _load("cluster.yaml")
    broken["services"]["nats"]["command"] = ["--name", ["nats"]]
    assert list(jsonschema.Draft7Validator(_schema()).iter_errors(broken))


def _nats_server_accepts(command: list[str]) -> None:
    argv = [find_binary("nats-server"), *command, "-t"]
    argv = [arg.replace("/etc/nats/corral.conf", str(COMPOSE / "nats.conf")) for arg in argv]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "is valid" in output and "not defined" not in output, output


def test_every_nats_command_and_the_config_are_ones_nats_server_accepts() -> None:
    commands = [_load("compose.yaml")["services"]["nats"]["command"]]
    commands += [_load("cluster.yaml")["services"][node]["command"] for node in NODES]
    for command in commands:
        _nats_server_accepts(command)


def test_the_config_fsyncs_every_write_like_make_up() -> None:
    assert "sync_interval: always" in (COMPOSE / "nats.conf").read_text()


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_the_cluster_runs_three_named_servers_each_routed_to_all() -> None:
    cluster = _load("cluster.yaml")["services"]
    names = [_flag(cluster[node]["command"], "--name") for node in NODES]
    assert names == list(NODES)
    for node in NODES:
        command = cluster[node]["command"]
        assert _flag(command, "--cluster_name") == "corral"
        routes = _flag(command, "--routes").split(",")
        assert routes == [f"nats-route://{peer}:6222" for peer in NODES]
        assert f"{node}:/data" in cluster[node]["volumes"]  # each its own store


def test_every_corral_service_gets_every_server_and_the_same_replicas() -> None:
    base, cluster = _load("compose.yaml"), _load("cluster.yaml")["services"]
    services = _corral_services(base)
    assert set(services) == {"session-store", "gateway", "harness", "sandbox-manager", "credential-proxy"}
    for name in services:
        env = {**base["x-corral"]["environment"], **base["services"][name].get("environment", {})}
        assert env["CORRAL_NATS_REPLICAS"] == "1", name
        env |= cluster[name]["environment"]
        assert env["CORRAL_NATS_URL"].split(",") == [f"nats://{node}:4222" for node in NODES], name
        assert env["CORRAL_NATS_REPLICAS"] == "3", name
        assert set(NODES) <= set(cluster[name]["depends_on"]), name


def test_the_control_plane_runs_two_of_each_and_one_sandbox_host_pairs_its_two_services() -> None:
    services = _load("compose.yaml")["services"]
    for name in ("gateway", "session-store", "harness"):  # any one of them may die
        assert services[name]["deploy"]["replicas"] >= 2, name
    manager, proxy = services["sandbox-manager"], services["credential-proxy"]
    # the manager drives this machine's engine, with the image the sandbox-image service builds into it
    assert "/var/run/docker.sock:/var/run/docker.sock" in manager["volumes"]
    assert manager["environment"]["CORRAL_SANDBOX_IMAGE"] == services["sandbox-image"]["image"]
    assert manager["depends_on"]["sandbox-image"] == {"condition": "service_completed_successfully"}
    # ...and asks the credential-proxy on its machine for egress sockets the engine can mount by path
    assert (
        manager["environment"]["CORRAL_SANDBOX_EGRESS_HOST"] == proxy["environment"]["CORRAL_CREDENTIAL_PROXY_HOST_ID"]
    )
    sockets = proxy["environment"]["CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR"]
    assert f"{sockets}:{sockets}" in proxy["volumes"]
