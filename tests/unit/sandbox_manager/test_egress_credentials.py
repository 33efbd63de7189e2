"""What a sandbox with credentials at egress is started with: placeholders and its CA, never a secret."""

from __future__ import annotations

import json

import docker

from corral.contracts.egress import EgressPolicy
from corral.contracts.sandbox import Provision
from corral.sandbox_manager.container_spec import ContainerSpec, create_arguments
from corral.sandbox_manager.egress import CA_BUNDLE_VARIABLES, SANDBOX_CA_BUNDLE, EgressMount, vaults_of

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

SPEC = ContainerSpec(
    image="corral-sandbox:test",
    user="1000:1000",
    memory="512m",
    nano_cpus=1_000_000_000,
    pids=256,
    workspace_size="1g",
    tmp_size="256m",
    workspace_inodes=100_000,
    tmp_inodes=10_000,
    network="egress",
    output_limit=1 << 20,
    part_bytes=163_840,
    default_timeout_ms=120_000,
    max_timeout_ms=600_000,
)


def test_the_container_gets_each_placeholder_and_the_ca_bundle_variables_and_the_agent_the_ca() -> None:
    mount = EgressMount(
        "/run/corral-egress/sesn_1",
        credential_environment={"API_TOKEN": "corral-placeholder-abc", "HTTPS_PROXY": "corral-placeholder-def"},
        ca_certificate=CA,
    )
    arguments = create_arguments(
        docker.APIClient(base_url="unix:///nonexistent", version="1.43"), SPEC, "sbx", {}, mount
    )
    environment = arguments["environment"]
    assert environment["API_TOKEN"] == "corral-placeholder-abc"
    assert environment["HTTPS_PROXY"] == "http://127.0.0.1:3128"  # a credential never shadows the manager's own
    assert all(environment[name] == SANDBOX_CA_BUNDLE for name in CA_BUNDLE_VARIABLES)
    config = json.loads(arguments["command"][-1])
    assert config["egress_ca"] == CA and config["egress_ca_bundle"] == SANDBOX_CA_BUNDLE


def test_without_credentials_no_ca_variable_is_set() -> None:
    environment = EgressMount("/run/corral-egress/sesn_1").environment()
    assert not set(CA_BUNDLE_VARIABLES) & set(environment)


def test_a_request_with_vaults_puts_them_in_the_policy_and_one_without_does_not() -> None:
    asked = Provision(session_id="sesn_1", environment_id="env_1", workspace_id="wrkspc_1", vault_ids=["vlt_1"])
    vaults = vaults_of(asked)
    assert vaults is not None
    policy = vaults.policy(EgressPolicy(allowed_hosts=["api.example.com"]))
    assert (policy.workspace_id, policy.vault_ids, policy.allowed_hosts) == ("wrkspc_1", ["vlt_1"], ["api.example.com"])
    assert vaults_of(Provision(session_id="sesn_1", environment_id="env_1")) is None
