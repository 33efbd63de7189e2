"""The credential secret store on a real OpenBao, with the credential-proxy's own token and policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import hvac
import pytest
from pydantic import BaseModel

from corral.contracts.api.errors import ApiError
from corral.contracts.credentials import CreateCredential, CredentialAction, UpdateCredential
from corral.contracts.operation import Operation
from corral.contracts.rpc import StoreOps
from corral.credential_proxy.credentials import Credentials
from corral.credential_proxy.secret_store import SecretStore, SecretStoreUnavailable, credential_path, vault_path
from corral.credential_proxy.vault import Vault
from tests.integration.credential_proxy.conftest import OpenBaoServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def logged_in(vault: OpenBaoServer) -> AsyncIterator[Vault]:
    """The credential-proxy's OpenBao client, logged in with its AppRole as the service does."""
    async with Vault(vault.settings(), timeout=2).running() as client:
        yield client


def store_for(vault: OpenBaoServer, token: str, addr: str | None = None) -> SecretStore:
    return SecretStore(hvac.Client(url=addr or vault.server.addr, token=token, timeout=2), timeout_s=5)


def root(vault: OpenBaoServer) -> httpx.Client:
    return httpx.Client(base_url=f"{vault.server.addr}/v1/corral", headers={"X-Vault-Token": vault.server.root_token})


async def test_a_secret_is_written_with_one_version_read_and_deleted_with_all_its_versions(
    vault: OpenBaoServer, logged_in: Vault
) -> None:
    secrets = SecretStore(logged_in.client, timeout_s=5)
    path = credential_path("wrkspc_a", "vlt_1", "vcrd_1")
    await secrets.write(path, {"token": "first"})
    await secrets.write(path, {"token": "second"})
    assert await secrets.read(path) == {"token": "second"}
    with root(vault) as bao:
        versions = bao.get(f"metadata/{path}").json()["data"]["versions"]
        assert len(versions) == 1, "a replaced secret is destroyed, not kept as history"
        assert bao.get(f"data/{path}", params={"version": 1}).status_code == 404
    await secrets.delete(path)
    assert await secrets.read(path) is None
    with root(vault) as bao:
        assert bao.get(f"metadata/{path}").status_code == 404  # metadata and every version gone
    await secrets.delete(path)  # nothing there is fine


async def test_a_vault_tree_is_removed_whole(logged_in: Vault) -> None:
    secrets = SecretStore(logged_in.client, timeout_s=5)
    for credential in ("vcrd_a", "vcrd_b"):
        await secrets.write(credential_path("wrkspc_t", "vlt_t", credential), {"token": credential})
    keep = credential_path("wrkspc_t", "vlt_other", "vcrd_c")
    await secrets.write(keep, {"token": "kept"})
    assert await secrets.delete_tree(vault_path("wrkspc_t", "vlt_t")) == 2
    assert await secrets.list(f"{vault_path('wrkspc_t', 'vlt_t')}/credentials") == []
    assert await secrets.read(keep) == {"token": "kept"}


async def test_a_refused_token_is_unavailable_not_a_crash(vault: OpenBaoServer) -> None:
    with pytest.raises(SecretStoreUnavailable, match="refused"):
        await store_for(vault, token="s.not-a-token").write(credential_path("w", "vlt_x", "vcrd_x"), {"k": "v"})


async def test_openbao_down_is_unavailable_not_a_crash(vault: OpenBaoServer) -> None:
    down = store_for(vault, token="s.whatever", addr="http://127.0.0.1:9")
    with pytest.raises(SecretStoreUnavailable, match="cannot be used right now"):
        await down.write(credential_path("w", "vlt_x", "vcrd_x"), {"k": "v"})
    with pytest.raises(SecretStoreUnavailable):
        await down.read(credential_path("w", "vlt_x", "vcrd_x"))


def test_ids_cannot_climb_out_of_the_credential_paths() -> None:
    with pytest.raises(ValueError, match="not an id"):
        credential_path("w", "vlt_x", "../../elsewhere")


class RecordingCatalog:
    """The session-store's answers for one vault; ``fail_saves`` makes recording a credential fail
    (as a session-store that is down would), after the secret was written."""

    def __init__(self, *, fail_saves: bool) -> None:
        self.fail_saves = fail_saves
        self.saved: dict[str, dict[str, Any]] = {}

    async def __call__(self, op: Operation[Any, Any], request: BaseModel) -> Any:
        if op is StoreOps.VAULTS_GET:
            return {
                "type": "vault",
                "id": "vlt_r",
                "display_name": "v",
                "metadata": {},
                "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z",
            }
        if op is StoreOps.CREDENTIALS_GET:
            return self.saved[request.id]  # type: ignore[attr-defined]
        if op is StoreOps.CREDENTIALS_SAVE:
            if self.fail_saves:
                raise ApiError("overloaded_error", "the session-store is unavailable")
            credential = request.credential  # type: ignore[attr-defined]
            self.saved[credential["id"]] = credential
            return credential
        raise AssertionError(op.name)


async def test_a_credential_whose_record_fails_leaves_no_secret_behind(logged_in: Vault) -> None:
    secrets = SecretStore(logged_in.client, timeout_s=5)
    catalog = RecordingCatalog(fail_saves=True)
    credentials = Credentials(secrets=secrets, store=catalog)
    params = {"auth": {"type": "static_bearer", "mcp_server_url": "https://m.example/mcp", "token": "never-kept"}}
    with pytest.raises(ApiError, match="unavailable"):
        await credentials.create(CreateCredential(workspace_id="wrkspc_r", vault_id="vlt_r", params=params))
    assert await secrets.list(f"{vault_path('wrkspc_r', 'vlt_r')}/credentials") == []

    catalog.fail_saves = False
    made = await credentials.create(CreateCredential(workspace_id="wrkspc_r", vault_id="vlt_r", params=params))
    path = credential_path("wrkspc_r", "vlt_r", made["id"])
    assert await secrets.read(path) == {"token": "never-kept"}
    catalog.fail_saves = True
    update = UpdateCredential(
        workspace_id="wrkspc_r",
        vault_id="vlt_r",
        id=made["id"],
        params={"auth": {"type": "static_bearer", "token": "new"}},
    )
    with pytest.raises(ApiError):
        await credentials.update(update)
    assert await secrets.read(path) == {"token": "never-kept"}, "the old secret is written back"
    catalog.fail_saves = False
    await credentials.archive(CredentialAction(workspace_id="wrkspc_r", vault_id="vlt_r", id=made["id"]))
    assert await secrets.read(path) is None
