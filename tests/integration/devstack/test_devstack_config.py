"""How corral.devstack decides ports, the model, and each service's environment (no processes)."""

from __future__ import annotations

from corral.devstack import ModelConfig, Ports
from corral.devstack.configuration import read_model
from corral.devstack.openbao import AppRoleLogin
from corral.devstack.services import ServiceContext, service_environment, service_names


def _ctx(model: ModelConfig) -> ServiceContext:
    return ServiceContext(
        nats_url="nats://127.0.0.1:4222",
        database_url="postgresql://postgres@127.0.0.1:55432/corral",
        api_key="sk-corral-dev-x",
        gateway_port=8080,
        embedded_model_port=8090,
        openbao_addr="http://127.0.0.1:8200",
        openbao_login=AppRoleLogin("role", "secret"),
        model=model,
    )


def test_free_ports_are_distinct() -> None:
    values = list(Ports.free().as_dict().values())
    assert len(set(values)) == len(values)


def test_the_embedded_model_and_harness_count_decide_the_service_list() -> None:
    assert service_names(2, embedded_model=True) == [
        "embedded-model",
        "session-store",
        "gateway",
        "harness-1",
        "harness-2",
        "sandbox-manager",
        "credential-proxy",
    ]
    assert "embedded-model" not in service_names(3, embedded_model=False)
    assert "harness-3" in service_names(3, embedded_model=False)


def test_only_the_credential_proxy_gets_the_openbao_login() -> None:
    ctx = _ctx(read_model({}, 8090))
    base = {"PATH": "/usr/bin", "VAULT_TOKEN": "leak", "CORRAL_VAULT_TOKEN": "leak", "CORRAL_OPENBAO_TOKEN": "leak"}
    for name in service_names(2, embedded_model=True):
        env = service_environment(name, ctx, base=base)
        assert env["CORRAL_NATS_URL"] == "nats://127.0.0.1:4222"
        assert env["PATH"] == "/usr/bin"
        assert "leak" not in env.values()
        if name == "credential-proxy":
            assert (env["CORRAL_OPENBAO_ROLE_ID"], env["CORRAL_OPENBAO_SECRET_ID"]) == ("role", "secret")
            assert env["CORRAL_OPENBAO_ADDR"] == "http://127.0.0.1:8200"
        else:
            assert "CORRAL_OPENBAO_SECRET_ID" not in env


def test_each_service_gets_its_own_settings() -> None:
    ctx = _ctx(read_model({}, 8090))
    base = {"ANTHROPIC_BASE_URL": "http://127.0.0.1:8080", "ANTHROPIC_API_KEY": "sk-corral-dev-x"}
    store = service_environment("session-store", ctx, base=base)
    assert store["CORRAL_POSTGRES_URL"] == "postgresql://postgres@127.0.0.1:55432/corral"
    assert store["CORRAL_SESSION_STORE_BOOTSTRAP_API_KEY"] == "sk-corral-dev-x"
    assert store["CORRAL_SESSION_STORE_BOOTSTRAP_WORKSPACE"] == "default"
    gateway = service_environment("gateway", ctx, base=base)
    assert (gateway["CORRAL_GATEWAY_HOST"], gateway["CORRAL_GATEWAY_PORT"]) == ("127.0.0.1", "8080")
    harness = service_environment("harness-2", ctx, base=base)
    assert harness["CORRAL_HARNESS_WORKER_ID"] == "harness-2"
    assert harness["CORRAL_MODEL_BASE_URL"] == "http://127.0.0.1:8090"
    assert harness["CORRAL_MODEL_API_KEY"] == "embedded"
    assert "ANTHROPIC_BASE_URL" not in harness  # never the gateway as its own model
    assert service_environment("embedded-model", ctx, base={})["CORRAL_EMBEDDED_MODEL_PORT"] == "8090"


def test_a_real_anthropic_key_reaches_the_harness_without_a_base_url() -> None:
    ctx = _ctx(read_model({"ANTHROPIC_API_KEY": "sk-ant-real"}, 8090))
    harness = service_environment("harness-1", ctx, base={})
    assert harness["CORRAL_MODEL_API_KEY"] == "sk-ant-real"
    assert "CORRAL_MODEL_BASE_URL" not in harness


def test_extra_service_env_applies_by_kind_and_by_name() -> None:
    ctx = _ctx(read_model({}, 8090))
    extra = {"harness": {"CORRAL_X": "kind"}, "harness-2": {"CORRAL_X": "name"}}
    assert service_environment("harness-1", ctx, base={}, extra=extra)["CORRAL_X"] == "kind"
    assert service_environment("harness-2", ctx, base={}, extra=extra)["CORRAL_X"] == "name"
    assert "CORRAL_X" not in service_environment("gateway", ctx, base={}, extra=extra)
