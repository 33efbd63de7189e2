"""OpenBao as ``make up`` runs it, on a private state directory and free ports: the credential-proxy's
AppRole identity reaches the credential paths and nothing else, another identity is refused them,
its token is renewed and replaced, a state directory from before AppRole is upgraded, the unseal
material is 0600 and the audit log holds no secret in plaintext."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.credential_proxy.vault import Vault
from corral.devstack.openbao import CREDENTIAL_PROXY_POLICY, KV_MOUNT, OpenBao
from corral.devstack.ports import Ports
from corral.devstack.state import StateDir, write_private
from tests.integration.credential_proxy.conftest import OpenBaoServer, openbao_server
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def api(server: OpenBao, token: str | None = None) -> httpx.Client:
    headers = {"X-Vault-Token": token} if token else {}
    return httpx.Client(base_url=f"{server.addr}/v1", headers=headers, timeout=10)


def approle_token(server: OpenBao, role_id: str, secret_id: str) -> httpx.Response:
    with api(server) as bao:
        return bao.post("auth/approle/login", json={"role_id": role_id, "secret_id": secret_id})


def proxy_token(vault: OpenBaoServer) -> str:
    response = approle_token(vault.server, vault.login.role_id, vault.login.secret_id)
    assert response.status_code == 200, response.text
    return str(response.json()["auth"]["client_token"])


def token_alive(server: OpenBao, token: str) -> bool:
    with api(server, server.root_token) as bao:
        return bao.post("auth/token/lookup", json={"token": token}).status_code == 200


async def until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    async def holds() -> bool:
        return condition()

    try:
        await eventually(holds, timeout=timeout, every=0.1)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_credential_proxy_identity_reads_and_writes_credentials_and_nothing_else(vault: OpenBaoServer) -> None:
    server = vault.server
    token = proxy_token(vault)
    name = f"identity-{uuid.uuid4().hex[:8]}"
    with api(server, server.root_token) as root, api(server, token) as mine:
        me = mine.get("auth/token/lookup-self").json()["data"]
        assert sorted(me["policies"]) == sorted([CREDENTIAL_PROXY_POLICY, "default"])
        assert 0 < me["ttl"] <= server.token_ttl_s and me["renewable"] is True
        # its credentials: write, read, update, list, delete
        assert mine.post(f"{KV_MOUNT}/data/{name}", json={"data": {"k": "v1"}}).status_code == 200
        assert mine.post(f"{KV_MOUNT}/data/{name}", json={"data": {"k": "v2"}}).status_code == 200
        assert mine.get(f"{KV_MOUNT}/data/{name}").json()["data"]["data"] == {"k": "v2"}
        assert name in mine.request("LIST", f"{KV_MOUNT}/metadata/").json()["data"]["keys"]
        assert mine.delete(f"{KV_MOUNT}/metadata/{name}").status_code == 204
        assert mine.get(f"{KV_MOUNT}/data/{name}").status_code == 404
        # nothing else: another mount, sys/, policies, auth methods, other tokens, more secret ids
        if "elsewhere/" not in root.get("sys/mounts").json()["data"]:
            assert root.post("sys/mounts/elsewhere", json={"type": "kv", "options": {"version": "2"}}).is_success
        assert root.post("elsewhere/data/x", json={"data": {"k": "v"}}).status_code == 200
        everything = {"policy": 'path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }'}
        refused = [
            mine.get("elsewhere/data/x"),
            mine.post("elsewhere/data/x", json={"data": {"k": "mine"}}),
            mine.get("sys/mounts"),
            mine.post("sys/mounts/mine", json={"type": "kv"}),
            mine.get("sys/policies/acl"),
            mine.put(f"sys/policies/acl/{CREDENTIAL_PROXY_POLICY}", json=everything),
            mine.put("sys/policies/acl/mine", json=everything),
            mine.get("sys/audit"),
            mine.post("sys/auth/mine", json={"type": "approle"}),
            mine.post("auth/token/create", json={}),
            mine.post(f"auth/approle/role/{CREDENTIAL_PROXY_POLICY}/secret-id", json={}),
            mine.post(f"auth/approle/role/{CREDENTIAL_PROXY_POLICY}", json={"token_policies": ["root"]}),
            mine.post("sys/mounts/corral/tune", json={"max_versions": 1}),
        ]
        assert [(r.request.method, r.request.url.path, r.status_code) for r in refused if r.status_code != 403] == []
        assert root.get(f"sys/policies/acl/{CREDENTIAL_PROXY_POLICY}").status_code == 200


def test_another_services_identity_is_refused_the_credential_paths(vault: OpenBaoServer) -> None:
    """Another service holding an OpenBao identity of its own (an AppRole of its own, or a token
    with only OpenBao's default policy) cannot read, write or list the credentials; the
    credential-proxy's role id with a secret id it was not given logs in to nothing."""
    server = vault.server
    name = f"canary-{uuid.uuid4().hex[:8]}"
    with api(server, server.root_token) as root:
        assert root.post(f"{KV_MOUNT}/data/{name}", json={"data": {"token": "sk-canary"}}).status_code == 200
        assert root.post("auth/approle/role/corral-harness", json={"token_policies": ["default"]}).is_success
        role_id = root.get("auth/approle/role/corral-harness/role-id").json()["data"]["role_id"]
        secret_id = root.post("auth/approle/role/corral-harness/secret-id", json={}).json()["data"]["secret_id"]
        default_only = root.post("auth/token/create", json={"policies": ["default"]}).json()["auth"]["client_token"]
    harness = approle_token(server, role_id, secret_id)
    assert harness.status_code == 200, harness.text
    for token in (harness.json()["auth"]["client_token"], default_only):
        with api(server, token) as other:
            assert other.get("auth/token/lookup-self").status_code == 200  # a valid identity...
            assert other.get(f"{KV_MOUNT}/data/{name}").status_code == 403  # ...refused the credentials
            assert other.post(f"{KV_MOUNT}/data/{name}", json={"data": {"token": "x"}}).status_code == 403
            assert other.request("LIST", f"{KV_MOUNT}/metadata/").status_code == 403
            assert other.delete(f"{KV_MOUNT}/metadata/{name}").status_code == 403
    wrong = approle_token(server, vault.login.role_id, str(uuid.uuid4()))
    assert wrong.status_code == 400 and "auth" not in (wrong.json() or {}), wrong.text
    with api(server) as anonymous:
        assert anonymous.get(f"{KV_MOUNT}/data/{name}").status_code == 403


def test_unseal_material_and_the_login_are_owner_only_and_the_audit_log_holds_no_plaintext_secret(
    vault: OpenBaoServer,
) -> None:
    server = vault.server
    state = server.state
    for path in (state.openbao_init_file, server.credential_proxy_file, server.audit_log):
        assert mode(path) == 0o600, path
    assert server.audit_log == state.logs_dir / "openbao-audit.log"
    canary = f"sk-canary-{uuid.uuid4().hex}"
    name = f"audited-{uuid.uuid4().hex[:8]}"
    token = proxy_token(vault)
    with api(server, token) as mine:
        assert mine.post(f"{KV_MOUNT}/data/{name}", json={"data": {"api_key": canary}}).status_code == 200
        assert mine.get(f"{KV_MOUNT}/data/{name}").json()["data"]["data"]["api_key"] == canary
    audit = server.audit_log.read_text()
    records = [json.loads(line) for line in audit.splitlines()]
    # the device records these requests (paths in clear, values HMAC'd)...
    assert [r["type"] for r in records if r["request"]["path"] == f"{KV_MOUNT}/data/{name}"] == [
        "request",
        "response",
        "request",
        "response",
    ]
    assert "hmac-sha256:" in audit
    # ...and none of the secrets in plaintext: the credential, the login, the tokens
    for secret in (canary, vault.login.secret_id, token, server.root_token):
        assert secret not in audit


async def test_the_token_is_renewed_then_replaced_by_a_new_login_past_its_maximum_ttl(tmp_path: Path) -> None:
    """With 2 s tokens renewable up to 5 s, the credential-proxy's client renews, logs in again,
    keeps reading credentials after its first token has expired, and revokes its token at stop."""
    with openbao_server(tmp_path / "state", token_ttl_s=2, token_max_ttl_s=5) as vault:
        server = vault.server
        name = f"renewed-{uuid.uuid4().hex[:8]}"
        with api(server, server.root_token) as root:
            assert root.post(f"{KV_MOUNT}/data/{name}", json={"data": {"k": "v"}}).status_code == 200
        client = Vault(vault.settings(), timeout=2)

        def read() -> Any:
            kv = client.client.secrets.kv.v2
            return kv.read_secret_version(name, mount_point=KV_MOUNT, raise_on_deleted_version=True)

        async with client.running():
            first = client.client.token
            assert client.logins == 1 and token_alive(server, first)
            await until(lambda: client.renewals >= 1, "a renewal")
            await until(lambda: client.logins >= 2, "a new login as the token nears its maximum TTL")
            await until(lambda: not token_alive(server, first), "the first token expiring", timeout=15)
            assert (await asyncio.to_thread(read))["data"]["data"] == {"k": "v"}
            assert await client.probe(2.0) == "ok"
            last = client.client.token
            assert last != first
        assert not token_alive(server, last)  # revoked at stop


class EarlierOpenBao(OpenBao):
    """What ``make up`` made before AppRole: no audit device, a read-only policy, and a 32-day token
    for the credential-proxy in ``openbao-credential-proxy.json``."""

    def config_text(self) -> str:
        return super().config_text().split('audit "file"')[0]

    def wait_ready(self, deadline: float) -> None:
        self.poll_until(self.health_status, deadline=deadline, what="openbao answering")
        self._initialise()
        self._unseal()
        self.poll_until(lambda: True if self.health_status() == 200 else None, deadline=deadline, what="unsealed")
        self._ensure_kv_mount()
        policy = f'path "{KV_MOUNT}/data/*" {{ capabilities = ["read"] }}'
        with api(self, self.root_token) as root:
            assert root.put(f"sys/policies/acl/{CREDENTIAL_PROXY_POLICY}", json={"policy": policy}).is_success
            made = root.post(
                "auth/token/create-orphan", json={"policies": [CREDENTIAL_PROXY_POLICY], "ttl": "768h"}
            ).json()
            assert root.post(f"{KV_MOUNT}/data/kept", json={"data": {"k": "from before"}}).status_code == 200
        write_private(self.credential_proxy_file, json.dumps({"token": made["auth"]["client_token"]}) + "\n")


def test_a_state_directory_from_before_approle_is_upgraded_on_the_next_start(tmp_path: Path) -> None:
    state = StateDir.at(tmp_path / "state")
    ports = Ports.free()
    earlier = EarlierOpenBao(state, ports.bao, ports.bao_cluster)
    earlier.launch()
    try:
        earlier.wait_ready(time.monotonic() + 60)
        old_token = json.loads(earlier.credential_proxy_file.read_text())["token"]
        assert token_alive(earlier, old_token)
    finally:
        earlier.stop()
    assert not earlier.audit_log.exists()

    server = OpenBao(state, ports.bao, ports.bao_cluster)
    server.launch()
    try:
        server.wait_ready(time.monotonic() + 60)  # unsealed with the kept key, not initialised again
        login = server.credential_proxy_login()
        assert not token_alive(server, old_token)  # the long-lived token is revoked
        stored = json.loads(server.credential_proxy_file.read_text())
        assert "token" not in stored and stored["role_id"] == login.role_id
        assert stored["secret_id"] == login.secret_id and mode(server.credential_proxy_file) == 0o600
        assert server.credential_proxy_login() == login  # a later start keeps the same login
        upgraded = OpenBaoServer(server=server, login=login)
        with api(server, proxy_token(upgraded)) as mine:
            assert mine.get(f"{KV_MOUNT}/data/kept").json()["data"]["data"] == {"k": "from before"}
            assert mine.post(f"{KV_MOUNT}/data/kept", json={"data": {"k": "now"}}).status_code == 200  # new policy
            assert mine.get("sys/mounts").status_code == 403
        assert mode(server.audit_log) == 0o600 and f"{KV_MOUNT}/data/kept" in server.audit_log.read_text()
    finally:
        server.stop()
