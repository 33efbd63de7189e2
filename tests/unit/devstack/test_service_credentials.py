"""Which credentials each service's environment gets from the launcher (no processes)."""

from __future__ import annotations

import pytest

from corral.devstack.configuration import read_model, read_ports
from corral.devstack.nats_users import SERVICE_USERS, service_permissions
from corral.devstack.openbao import AppRoleLogin
from corral.devstack.services import ServiceContext, service_environment, service_names

PASSWORDS = {user: f"pw-{user}" for user in ("admin", *SERVICE_USERS)}


def _ctx() -> ServiceContext:
    return ServiceContext(
        nats_url="nats://127.0.0.1:4222",
        database_url="postgresql://corral:pw@127.0.0.1:55432/corral",
        api_key="sk-corral-dev-x",
        gateway_port=8080,
        embedded_model_port=8090,
        openbao_addr="http://127.0.0.1:8200",
        openbao_login=AppRoleLogin("role-id-of-the-proxy", "secret-id-of-the-proxy"),
        model=read_model({}, 8090),
        nats_passwords=PASSWORDS,
    )


def test_each_service_connects_as_its_own_nats_user_and_never_the_launchers() -> None:
    leaked = {"CORRAL_NATS_USER": "admin", "CORRAL_NATS_PASSWORD": PASSWORDS["admin"]}
    for name in service_names(2, embedded_model=True):
        env = service_environment(name, _ctx(), base=leaked)
        if name == "embedded-model":  # it does not use the bus
            assert "CORRAL_NATS_USER" not in env
            assert "CORRAL_NATS_PASSWORD" not in env
            continue
        user = "harness" if name.startswith("harness-") else name
        assert (env["CORRAL_NATS_USER"], env["CORRAL_NATS_PASSWORD"]) == (user, f"pw-{user}")


def test_no_service_user_may_delete_or_purge_but_the_session_store_purging_the_session_log() -> None:
    for user, permissions in service_permissions().items():
        assert "$JS.API.STREAM.DELETE.>" in permissions.deny_publish
        assert "$JS.API.STREAM.MSG.DELETE.>" in permissions.deny_publish
        purges = [
            s
            for s in permissions.publish
            if s.startswith("$JS.API.STREAM.PURGE.") and not s.endswith("OBJ_corral_bodies")
        ]
        own = {
            "session-store": ["$JS.API.STREAM.PURGE.CORRAL_SESSIONS"],  # a deleted session's log
            "harness": ["$JS.API.STREAM.PURGE.OBJ_corral_harness_snapshots"],  # a snapshot replacing the last
        }
        assert purges == own.get(user, [])
        assert not any(s in (">", "$JS.API.>", "_INBOX.>") for s in (*permissions.publish, *permissions.subscribe))


def test_only_the_credential_proxy_gets_an_openbao_login_and_no_service_inherits_one() -> None:
    leaked = {
        "PATH": "/usr/bin",
        "VAULT_TOKEN": "leak",
        "BAO_TOKEN": "leak",
        "CORRAL_VAULT_TOKEN": "leak",
        "CORRAL_OPENBAO_TOKEN": "leak",
        "CORRAL_OPENBAO_SECRET_ID": "leak",
        "CORRAL_OPENBAO_ROLE_ID": "leak",
    }
    for name in service_names(2, embedded_model=True):
        env = service_environment(name, _ctx(), base=leaked)
        assert "leak" not in env.values(), name
        assert not any(k.startswith(("VAULT_", "BAO_", "CORRAL_VAULT_")) for k in env), name
        openbao = {k: v for k, v in env.items() if k.startswith("CORRAL_OPENBAO_")}
        if name == "credential-proxy":
            assert openbao == {
                "CORRAL_OPENBAO_ADDR": "http://127.0.0.1:8200",
                "CORRAL_OPENBAO_ROLE_ID": "role-id-of-the-proxy",
                "CORRAL_OPENBAO_SECRET_ID": "secret-id-of-the-proxy",
            }
        else:
            assert openbao == {}, name
            assert "secret-id-of-the-proxy" not in env.values() and "role-id-of-the-proxy" not in env.values()


def test_the_openbao_ports_are_read_from_their_new_names_and_for_now_their_old_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert read_ports({"CORRAL_OPENBAO_PORT": "9200"}).bao_cluster == 9201
    assert caplog.records == []
    old = read_ports({"CORRAL_BAO_PORT": "9300", "CORRAL_BAO_CLUSTER_PORT": "9400"})
    assert (old.bao, old.bao_cluster) == (9300, 9400)
    assert "CORRAL_BAO_PORT is deprecated" in caplog.text and "set CORRAL_OPENBAO_PORT" in caplog.text
    assert read_ports({"CORRAL_OPENBAO_PORT": "9200", "CORRAL_BAO_PORT": "9300"}).bao == 9200


def test_only_the_gateway_sends_repository_tokens_and_only_the_credential_proxy_receives_them() -> None:
    permissions = service_permissions()
    register = "corral.rpc.repositories.register"
    senders = sorted(user for user, p in permissions.items() if register in p.publish)
    assert senders == ["gateway"]
    listeners = sorted(user for user, p in permissions.items() if "corral.rpc.repositories.*" in p.subscribe)
    assert listeners == ["credential-proxy"]
    assert "corral.rpc.repositories.check" in permissions["sandbox-manager"].publish
