"""Least privilege: without a service's credentials nothing on Corral's subjects is reachable, and
each service's NATS user can only publish and subscribe where that service works; the log streams
refuse deletes; Postgres wants a password; the credential-proxy's OpenBao token reads credentials only.

A refused publish or subscription is reported by the server as a ``Permissions Violation`` on the
connection (the connection stays up); the stores are checked with the ``admin`` user afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from corral.bus import Bus, NotAuthorized, Refused
from corral.contracts import subjects
from corral.contracts.egress import EgressOps, egress_host_rpc
from corral.contracts.rpc import Op
from corral.contracts.sandbox import sandbox_rpc
from corral.devstack.nats_users import SERVICE_USERS
from corral.devstack.stack import Stack
from corral.settings import NatsSettings
from tests.waiting import eventually


@contextlib.asynccontextmanager
async def connected(stack: Stack, user: str) -> AsyncIterator[Bus]:
    async with Bus.connect(stack.nats_settings(user), name=f"test-as-{user}") as bus:
        yield bus


async def violation(bus: Bus, what: str, subject: str) -> bool:
    """Whether the server refused ``what`` (``publish`` or ``subscription``) on ``subject``: the
    server answers a PING after the command, so after a flush its verdict has arrived."""
    await bus.flush()
    return f'{what} to "{subject.lower()}"' in str(bus.last_error).lower()


async def refused_publish(bus: Bus, subject: str) -> bool:
    await bus.publish_core(subject, b"{}")
    return await violation(bus, "publish", subject)


async def refused_subscription(bus: Bus, subject: str) -> bool:
    async with bus.listen(subject, lambda _data: None):
        return await violation(bus, "subscription", subject)


async def test_a_client_without_credentials_is_refused(stack: Stack) -> None:
    async with asyncio.timeout(20):
        with pytest.raises(NotAuthorized, match="without credentials"):
            async with Bus.connect(NatsSettings(url=stack.nats_url, connect_timeout_s=2), name="anonymous"):
                pass
        wrong = NatsSettings(url=stack.nats_url, user="gateway", password="not-the-password")
        with pytest.raises(NotAuthorized, match="'gateway'"):
            async with Bus.connect(wrong, name="guesser"):
                pass


async def test_the_gateway_cannot_write_a_log_or_mint_an_api_key(stack: Stack, bus: Bus) -> None:
    session_log = subjects.session_log("sesn_least_privilege")
    key_log = subjects.api_key_log("key_least_privilege")
    async with connected(stack, "gateway") as gateway:
        assert await refused_publish(gateway, session_log)
        assert await refused_publish(gateway, key_log)
        assert await refused_publish(gateway, subjects.store_rpc(Op.API_KEYS_CREATE))
        assert await refused_publish(gateway, subjects.wake("sesn_least_privilege"))
        assert await refused_subscription(gateway, subjects.STORE_RPC_WILDCARD)
        assert await refused_subscription(gateway, "_INBOX.session-store.>")
        assert await refused_subscription(gateway, ">")
        # what it does need still works: it asks the session-store, and follows a session's log
        assert not await refused_publish(gateway, subjects.store_rpc(Op.SESSIONS_GET))
        assert not await refused_subscription(gateway, subjects.deltas("sesn_least_privilege"))
    assert await bus.last_seq(subjects.SESSIONS_STREAM, session_log) == 0
    assert await bus.last_seq(subjects.CATALOG_STREAM, key_log) == 0


#: Per service user: one subject it may publish to (harmless to publish to here) and some it may not.
CONFINEMENT = {
    "harness": (
        subjects.deltas("sesn_least_privilege"),
        [
            subjects.store_rpc(Op.SESSIONS_CREATE),
            subjects.store_rpc(Op.API_KEYS_CREATE),
            subjects.session_log("sesn_least_privilege"),
            subjects.agent_log("agent_least_privilege"),
            "$KV.corral_sandboxes.k",
            # of the egress operations it only takes the credential hosts not reached
            EgressOps.OPEN.subject,
            EgressOps.CLOSE.subject,
            egress_host_rpc("host-a", EgressOps.OPEN.name),
            egress_host_rpc("host-a", EgressOps.CLOSE.name),
        ],
    ),
    "sandbox-manager": (
        "$JS.API.STREAM.INFO.KV_corral_sandboxes",
        [
            subjects.store_rpc(Op.EVENTS_LIST),
            "$KV.corral_leases.k",
            subjects.session_log("sesn_least_privilege"),
            EgressOps.FAILURES.subject,  # the harness's to take
            egress_host_rpc("host-a", EgressOps.FAILURES.name),
        ],
    ),
    "credential-proxy": (
        "$JS.API.STREAM.INFO.KV_corral_egress",
        [sandbox_rpc("execute"), subjects.agent_log("agent_least_privilege"), subjects.store_rpc(Op.SESSIONS_GET)],
    ),
    "session-store": (
        f"$JS.API.STREAM.INFO.{subjects.SESSIONS_STREAM}",
        # releasing a sandbox is the sandbox-manager's own reading of the log, not a call from here
        [
            "$KV.corral_leases.k",
            subjects.deltas("sesn_least_privilege"),
            sandbox_rpc("execute"),
            sandbox_rpc("release"),
        ],
    ),
}


@pytest.mark.parametrize("user", sorted(CONFINEMENT))
async def test_each_service_user_publishes_only_where_its_service_works(stack: Stack, user: str) -> None:
    allowed, refused = CONFINEMENT[user]
    async with connected(stack, user) as service:
        for subject in refused:
            assert await refused_publish(service, subject), f"{user} published to {subject}"
        before = str(service.last_error)
        await service.publish_core(allowed, b"")
        await service.flush()
        assert str(service.last_error) == before, f"{user} was refused {allowed}: {service.last_error}"
        assert await refused_subscription(service, subjects.SESSIONS_WILDCARD)
        assert await refused_subscription(service, "_INBOX.gateway.>")


@pytest.mark.parametrize(
    ("user", "spec"),
    [
        ("sandbox-manager", subjects.SANDBOX_RELEASES_SPEC),
        ("credential-proxy", subjects.MCP_SESSION_ENDINGS_SPEC),
    ],
)
async def test_the_log_endings_readers_read_it_only_through_their_headers_only_consumers(
    stack: Stack, user: str, spec: subjects.ConsumerSpec
) -> None:
    """Each may fetch from the consumer the session-store made for it (record headers, no bodies) and
    nothing else of the log: creating a consumer of its own would read every record in full."""
    stream = spec.stream
    async with connected(stack, user) as manager:
        assert await manager.bind(spec) is not None  # the real manager fetches through it (see test_sandbox_release)
        for subject in (
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.peek.{subjects.SESSIONS_WILDCARD}",
            f"$JS.API.CONSUMER.CREATE.{stream}.{spec.name}.{spec.filter_subject}",  # no changing it either
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{spec.name}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.peek",
            f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.{subjects.session_log('sesn_least_privilege')}",
        ):
            assert await refused_publish(manager, subject), f"the {user} may publish to {subject}"
        assert await refused_subscription(manager, subjects.SESSIONS_WILDCARD)


@pytest.mark.parametrize("user", SERVICE_USERS)
async def test_no_service_user_can_delete_or_purge_a_stream(stack: Stack, bus: Bus, user: str) -> None:
    async with connected(stack, user) as service:
        for stream in (subjects.SESSIONS_STREAM, subjects.CATALOG_STREAM, subjects.WAKE_STREAM):
            assert await refused_publish(service, f"$JS.API.STREAM.DELETE.{stream}")
            assert await refused_publish(service, f"$JS.API.STREAM.MSG.DELETE.{stream}")
        assert await refused_publish(service, f"$JS.API.STREAM.PURGE.{subjects.CATALOG_STREAM}")
        if user != "session-store":  # it purges a deleted session's history, keeping the tombstone
            assert await refused_publish(service, f"$JS.API.STREAM.PURGE.{subjects.SESSIONS_STREAM}")
    for stream in (subjects.SESSIONS_STREAM, subjects.CATALOG_STREAM, subjects.WAKE_STREAM):
        assert (await bus.stream_spec(stream)).name == stream


async def test_the_log_streams_refuse_deletes_and_purges_from_anyone(stack: Stack, bus: Bus) -> None:
    """Even the ``admin`` user, which has no NATS permissions limits, cannot rewrite history: the
    streams themselves deny it (the session log allows the purge that deletes a session)."""
    for spec in (subjects.SESSIONS_SPEC, subjects.CATALOG_SPEC, subjects.WAKE_SPEC):
        config = await bus.stream_spec(spec.name)
        assert config.deny_delete is True, spec.name
        assert config.deny_purge is spec.deny_purge, spec.name
    seq = await bus.last_seq(subjects.CATALOG_STREAM, subjects.API_KEYS_WILDCARD)
    assert seq > 0  # the bootstrap key
    with pytest.raises(Refused, match=subjects.CATALOG_STREAM):
        await bus.delete_message(subjects.CATALOG_STREAM, seq)
    with pytest.raises(Refused, match=subjects.CATALOG_STREAM):
        await bus.purge_stream(subjects.CATALOG_STREAM)
    assert await bus.last_seq(subjects.CATALOG_STREAM, subjects.API_KEYS_WILDCARD) == seq


async def test_nats_fsyncs_every_write_before_acknowledging_it(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.nats_monitor_url, timeout=10) as monitor:
        config = (await monitor.get("/varz")).json()["jetstream"]["config"]
    assert config.get("sync_always") is True, config


async def test_postgres_wants_the_password(stack: Stack) -> None:
    url = urlsplit(stack.database_url)
    where = {"host": url.hostname, "port": url.port, "database": "corral", "timeout": 10}
    for user in ("corral", "postgres"):
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(user=user, password="not-the-password", **where)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
            await asyncpg.connect(user=user, password="", **where)
    conn = await asyncpg.connect(stack.database_url)  # what the session-store gets
    try:
        assert await conn.fetchval("SELECT current_user") == "corral"
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
        assert await conn.fetchval("SHOW password_encryption") == "scram-sha-256"
    finally:
        await conn.close()


def environment_of(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_text().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


async def test_the_credential_proxy_login_reaches_credentials_and_nothing_else(stack: Stack) -> None:
    root = {"X-Vault-Token": stack.vault_token}
    login = stack.credential_proxy_login
    pid = stack.pid("credential-proxy")
    assert pid is not None
    environ = environment_of(pid)
    assert (environ["CORRAL_OPENBAO_ROLE_ID"], environ["CORRAL_OPENBAO_SECRET_ID"]) == (login.role_id, login.secret_id)
    for name in stack.service_names():
        if name != "credential-proxy" and (other := stack.pid(name)) is not None:
            prefixes = ("CORRAL_OPENBAO_", "CORRAL_VAULT_", "VAULT_", "BAO_")
            held = [k for k in environment_of(other) if k.startswith(prefixes)]
            assert held == [], name
    async with httpx.AsyncClient(base_url=f"{stack.vault_addr}/v1", timeout=10) as bao:
        logged_in = await bao.post("auth/approle/login", json={"role_id": login.role_id, "secret_id": login.secret_id})
        assert logged_in.status_code == 200, logged_in.text
        mine = {"X-Vault-Token": logged_in.json()["auth"]["client_token"]}
        stored = await bao.post("corral/data/least-privilege", json={"data": {"k": "v"}}, headers=root)
        assert stored.status_code == 200, stored.text
        read = await bao.get("corral/data/least-privilege", headers=mine)
        assert read.status_code == 200, read.text
        assert read.json()["data"]["data"] == {"k": "v"}
        mounted = await bao.post("sys/mounts/elsewhere", json={"type": "kv", "options": {"version": "2"}}, headers=root)
        assert mounted.status_code in (200, 204), mounted.text
        # a new mount answers 400 ("upgrade in progress") for a moment after it is made

        async def written() -> bool:
            answer = await bao.post("elsewhere/data/x", json={"data": {"k": "v"}}, headers=root)
            return answer.status_code == 200

        await eventually(written, timeout=10)
        assert (await bao.get("elsewhere/data/x", headers=mine)).status_code == 403
        assert (await bao.get("sys/mounts", headers=mine)).status_code == 403
        assert (await bao.get("sys/policies/acl", headers=mine)).status_code == 403
        assert (await bao.post("elsewhere/data/x", json={"data": {}}, headers=mine)).status_code == 403
        assert (await bao.post("auth/token/create", json={}, headers=mine)).status_code == 403
        assert (await bao.get("auth/token/lookup-self", headers=mine)).status_code == 200
