"""Vaults and credentials through the official SDK, and where their secrets end up.

Every endpoint of ``client.beta.vaults`` and ``client.beta.vaults.credentials`` is driven for the three
``auth`` types, with bad input, and then a canary sweep: every secret is a unique canary, and after
the run no JetStream stream (the logs, KV buckets, object stores), no Postgres row and no service log
holds one, while OpenBao (read with the root token) holds each live credential's secret, and none of
an archived or deleted one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx
import pytest
from nats.js.errors import NotFoundError

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.api.vaults import SECRET_MAX_BYTES
from corral.contracts.rpc import CreateApiKey, Op, RpcReply
from corral.devstack.stack import Stack
from tests.e2e.sweep import CANARY_PREFIX, Canaries, admin_nats, sweep

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def canaries() -> Canaries:
    return Canaries()


async def other_workspace_client(stack: Stack, workspace_id: str = "wrkspc_vaults") -> anthropic.AsyncAnthropic:
    key = "sk-corral-test-" + secrets.token_urlsafe(16)
    request = CreateApiKey(workspace_id=workspace_id, key_sha256=hashlib.sha256(key.encode()).hexdigest(), name="t")
    async with Bus.connect(stack.nats_settings(), name="tests") as bus:
        reply = RpcReply.model_validate_json(
            await bus.request(subjects.store_rpc(Op.API_KEYS_CREATE), request.model_dump_json().encode())
        )
    assert reply.ok, reply.error
    return anthropic.AsyncAnthropic(base_url=stack.gateway_url, api_key=key, max_retries=0, timeout=30)


@pytest.fixture
async def bao(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """OpenBao with the root token: what the tests read the stored secrets with."""
    headers = {"X-Vault-Token": stack.vault_token}
    async with httpx.AsyncClient(base_url=f"{stack.vault_addr}/v1/corral", headers=headers, timeout=10) as c:
        yield c


async def stored_secret(bao: httpx.AsyncClient, vault_id: str, credential_id: str) -> dict[str, Any] | None:
    listing = await bao.get(f"metadata/workspaces/default/vaults/{vault_id}/credentials/{credential_id}")
    response = await bao.get(f"data/workspaces/default/vaults/{vault_id}/credentials/{credential_id}")
    if response.status_code == 404:
        assert listing.status_code == 404, "a deleted secret keeps no metadata (all versions removed)"
        return None
    assert response.status_code == 200, response.text
    assert listing.json()["data"]["max_versions"] == 1
    data: dict[str, Any] = response.json()["data"]["data"]
    return data


def later(hours: int = 1) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def dumped(obj: Any) -> str:
    return json.dumps(obj.model_dump(mode="json"))


async def bodies_last_seq(js: Any) -> int:
    try:
        info = await js.stream_info(f"OBJ_{subjects.BODIES_BUCKET}")
    except NotFoundError:
        return 0
    return int(info.state.last_seq)


async def test_vaults_and_credentials_through_the_sdk(
    stack: Stack, client: anthropic.AsyncAnthropic, bao: httpx.AsyncClient, canaries: Canaries
) -> None:
    nc = await admin_nats(stack)
    js = nc.jetstream()
    bodies_before = await bodies_last_seq(js)

    # --- vaults: create, retrieve, update, list (pages), archive -----------------------------------
    vault = await client.beta.vaults.create(display_name="e2e vault", metadata={"team": "infra"})
    assert vault.id.startswith("vlt_") and vault.type == "vault" and vault.metadata == {"team": "infra"}
    assert (await client.beta.vaults.retrieve(vault.id)).display_name == "e2e vault"
    updated = await client.beta.vaults.update(vault.id, display_name="renamed", metadata={"team": None, "x": "1"})
    assert updated.display_name == "renamed" and updated.metadata == {"x": "1"}
    extra = [await client.beta.vaults.create(display_name=f"extra {i}") for i in range(3)]
    first = await client.beta.vaults.list(limit=2)
    assert len(first.data) == 2 and first.next_page
    listed = [v.id async for v in client.beta.vaults.list(limit=2)]
    assert {vault.id, *(v.id for v in extra)} <= set(listed) and len(listed) == len(set(listed))
    archived_vault = await client.beta.vaults.archive(extra[0].id)
    assert archived_vault.archived_at is not None
    assert extra[0].id not in [v.id async for v in client.beta.vaults.list()]
    assert extra[0].id in [v.id async for v in client.beta.vaults.list(include_archived=True)]

    # --- credentials of the three types ------------------------------------------------------------
    creds = client.beta.vaults.credentials
    bearer_token = canaries.new("bearer")
    bearer = await creds.create(
        vault.id,
        auth={"type": "static_bearer", "mcp_server_url": "https://mcp.example.com/mcp", "token": bearer_token},
        display_name="bearer",
        extra_headers={"Idempotency-Key": f"vaults-{canaries.run}"},
    )
    assert bearer.auth.type == "static_bearer" and bearer.auth.mcp_server_url == "https://mcp.example.com/mcp"
    again = await creds.create(
        vault.id,
        auth={"type": "static_bearer", "mcp_server_url": "https://mcp.example.com/mcp", "token": bearer_token},
        display_name="bearer",
        extra_headers={"Idempotency-Key": f"vaults-{canaries.run}"},
    )
    assert again.id == bearer.id  # replayed from the idempotency store, which keeps only the response

    access, refresh_token, client_secret = canaries.new("access"), canaries.new("refresh"), canaries.new("client")
    oauth = await creds.create(
        vault.id,
        auth={
            "type": "mcp_oauth",
            "mcp_server_url": "https://mcp.linear.app/mcp",
            "access_token": access,
            "expires_at": later(),
            "refresh": {
                "refresh_token": refresh_token,
                "client_id": "corral-client",
                "token_endpoint": "https://auth.example.com/token",
                "token_endpoint_auth": {"type": "client_secret_post", "client_secret": client_secret},
                "scope": "read write",
            },
        },
        metadata={"kind": "oauth"},
    )
    assert oauth.auth.type == "mcp_oauth" and oauth.auth.refresh is not None
    assert oauth.auth.refresh.token_endpoint_auth.type == "client_secret_post"
    assert oauth.auth.refresh.client_id == "corral-client" and oauth.auth.expires_at is not None

    env_value = canaries.new("env")
    env = await creds.create(
        vault.id,
        auth={
            "type": "environment_variable",
            "secret_name": "API_TOKEN",
            "secret_value": env_value,
            "networking": {"type": "limited", "allowed_hosts": ["api.example.com", "*.example.org"]},
            "injection_location": {"header": True, "body": True},
        },
    )
    assert env.auth.type == "environment_variable" and env.auth.secret_name == "API_TOKEN"
    assert env.auth.injection_location.header and env.auth.injection_location.body
    for credential in (bearer, oauth, env):
        text = dumped(credential)
        assert CANARY_PREFIX not in text, f"a response echoed a secret: {text}"

    assert await stored_secret(bao, vault.id, bearer.id) == {"token": bearer_token}
    assert await stored_secret(bao, vault.id, oauth.id) == {
        "access_token": access,
        "refresh_token": refresh_token,
        "client_secret": client_secret,
    }
    assert await stored_secret(bao, vault.id, env.id) == {"secret_value": env_value}

    # retrieve, update (secret and public parts), list with pages
    assert (await creds.retrieve(oauth.id, vault_id=vault.id)).metadata == {"kind": "oauth"}
    new_bearer = canaries.new("bearer2")
    changed = await creds.update(
        bearer.id, vault_id=vault.id, auth={"type": "static_bearer", "token": new_bearer}, display_name="rotated"
    )
    assert changed.display_name == "rotated" and CANARY_PREFIX not in dumped(changed)
    assert await stored_secret(bao, vault.id, bearer.id) == {"token": new_bearer}  # the old one is gone
    new_access = canaries.new("access2")
    changed_oauth = await creds.update(
        oauth.id,
        vault_id=vault.id,
        auth={"type": "mcp_oauth", "access_token": new_access, "expires_at": later(2), "refresh": {"scope": ""}},
        metadata={"kind": None},
    )
    assert changed_oauth.metadata == {} and changed_oauth.auth.refresh is not None
    assert changed_oauth.auth.refresh.scope is None
    assert (await stored_secret(bao, vault.id, oauth.id) or {})["access_token"] == new_access
    changed_env = await creds.update(
        env.id,
        vault_id=vault.id,
        auth={
            "type": "environment_variable",
            "networking": {"type": "unrestricted"},
            "injection_location": {"body": False},
        },
    )
    assert changed_env.auth.networking.type == "unrestricted"
    assert changed_env.auth.injection_location.header and not changed_env.auth.injection_location.body
    assert await stored_secret(bao, vault.id, env.id) == {"secret_value": env_value}

    page = await creds.list(vault.id, limit=2)
    assert len(page.data) == 2 and page.next_page
    assert [c.id async for c in creds.list(vault.id, limit=2)] == [bearer.id, oauth.id, env.id]

    # mcp_oauth_validate: judged from what is stored
    validation = await creds.mcp_oauth_validate(oauth.id, vault_id=vault.id)
    assert validation.type == "vault_credential_validation" and validation.credential_id == oauth.id
    assert validation.has_refresh_token and validation.status == "unknown"
    with pytest.raises(anthropic.BadRequestError, match="only mcp_oauth credentials"):
        await creds.mcp_oauth_validate(bearer.id, vault_id=vault.id)

    # --- bad input ---------------------------------------------------------------------------------
    with pytest.raises(anthropic.BadRequestError, match="auth"):
        await creds.create(vault.id, auth={"type": "ssh_key", "key": canaries.new("unknown")})  # type: ignore[arg-type, misc]
    huge = canaries.new("huge") + "x" * SECRET_MAX_BYTES
    with pytest.raises(anthropic.BadRequestError, match=f"more than the {SECRET_MAX_BYTES} bytes") as too_large:
        await creds.create(
            vault.id, auth={"type": "static_bearer", "mcp_server_url": "https://a.example", "token": huge}
        )
    assert too_large.value.body["error"]["details"]["error_code"] == "credential_secret_too_large"  # type: ignore[index]
    assert CANARY_PREFIX not in json.dumps(too_large.value.body)
    with pytest.raises(anthropic.BadRequestError, match="cannot become"):
        await creds.update(env.id, vault_id=vault.id, auth={"type": "static_bearer", "token": canaries.new("swap")})
    with pytest.raises(anthropic.BadRequestError, match="must be in the future"):
        await creds.create(
            vault.id,
            auth={
                "type": "mcp_oauth",
                "mcp_server_url": "https://a.example/mcp",
                "access_token": canaries.new("past"),
                "expires_at": "2001-01-01T00:00:00Z",
            },
        )
    with pytest.raises(anthropic.BadRequestError, match="is archived"):
        await creds.create(
            extra[0].id,
            auth={"type": "static_bearer", "mcp_server_url": "https://a.example", "token": canaries.new("archived")},
        )
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"x-api-key": stack.api_key, "anthropic-version": "2023-06-01"}
    ) as raw:
        for body in (b"{not json", b"[]", json.dumps({"auth": {"type": "static_bearer"}}).encode()):
            response = await raw.post(f"/v1/vaults/{vault.id}/credentials", content=body)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["type"] == "invalid_request_error"
        leaked = {"display_name": "x", "bogus": canaries.new("bogus")}
        response = await raw.post("/v1/vaults", json=leaked)
        assert response.status_code == 400 and "bogus" in response.text and CANARY_PREFIX not in response.text

    other = await other_workspace_client(stack)
    async with other:
        with pytest.raises(anthropic.NotFoundError):
            await other.beta.vaults.retrieve(vault.id)
        with pytest.raises(anthropic.NotFoundError):
            await other.beta.vaults.credentials.create(
                vault.id,
                auth={"type": "static_bearer", "mcp_server_url": "https://a.example", "token": canaries.new("foreign")},
            )
        with pytest.raises(anthropic.NotFoundError):
            await other.beta.vaults.credentials.retrieve(bearer.id, vault_id=vault.id)
        with pytest.raises(anthropic.NotFoundError):
            await other.beta.vaults.credentials.delete(bearer.id, vault_id=vault.id)
        with pytest.raises(anthropic.NotFoundError):
            await other.beta.vaults.delete(vault.id)
        assert [v.id async for v in other.beta.vaults.list()] == []
    assert await stored_secret(bao, vault.id, bearer.id) == {"token": new_bearer}  # untouched by the attempts
    assert (await bao.get("metadata/workspaces/wrkspc_vaults", params={"list": "true"})).status_code == 404

    # --- archive, delete ---------------------------------------------------------------------------
    archived = await creds.archive(env.id, vault_id=vault.id)
    assert archived.archived_at is not None and archived.auth.type == "environment_variable"
    assert await stored_secret(bao, vault.id, env.id) is None  # unusable: its secret is gone
    assert [c.id async for c in creds.list(vault.id)] == [bearer.id, oauth.id]
    assert env.id in [c.id async for c in creds.list(vault.id, include_archived=True)]
    with pytest.raises(anthropic.BadRequestError, match="archived"):
        await creds.update(env.id, vault_id=vault.id, display_name="no")
    gone = await creds.delete(bearer.id, vault_id=vault.id)
    assert gone.id == bearer.id and gone.type == "vault_credential_deleted"
    assert await stored_secret(bao, vault.id, bearer.id) is None
    with pytest.raises(anthropic.NotFoundError):
        await creds.retrieve(bearer.id, vault_id=vault.id)

    doomed = await client.beta.vaults.create(display_name="doomed")
    doomed_secret = canaries.new("doomed")
    doomed_credential = await creds.create(
        doomed.id, auth={"type": "static_bearer", "mcp_server_url": "https://d.example/mcp", "token": doomed_secret}
    )
    deleted_vault = await client.beta.vaults.delete(doomed.id)
    assert deleted_vault.type == "vault_deleted" and deleted_vault.id == doomed.id
    assert await stored_secret(bao, doomed.id, doomed_credential.id) is None
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.vaults.retrieve(doomed.id)

    # the live credential's secret is in OpenBao, and only there
    assert (await stored_secret(bao, vault.id, oauth.id) or {}).get("refresh_token") == refresh_token
    assert await bodies_last_seq(js) == bodies_before, "a request used the bodies object store"
    await nc.close()

    # --- the canary sweep --------------------------------------------------------------------------
    hits = await sweep(stack, canaries.all)
    assert hits == [], f"secrets found outside OpenBao: {hits}"
