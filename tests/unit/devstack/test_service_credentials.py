"""Which credentials each service's environment gets from the launcher (no processes)."""

from __future__ import annotations

from corral.devstack.configuration import read_model
from corral.devstack.nats_users import SERVICE_USERS, service_permissions
from corral.devstack.services import ServiceContext, service_environment, service_names

PASSWORDS = {user: f"pw-{user}" for user in ("admin", *SERVICE_USERS)}


def _ctx() -> ServiceContext:
    return ServiceContext(
        nats_url="nats://127.0.0.1:4222",
        database_url="postgresql://corral:pw@127.0.0.1:55432/corral",
        api_key="sk-corral-dev-x",
        gateway_port=8080,
        embedded_model_port=8090,
        vault_addr="http://127.0.0.1:8200",
        vault_token="s.proxy",
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
