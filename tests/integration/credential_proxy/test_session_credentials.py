"""A session's credentials on a real OpenBao: matching by MCP server URL and by host, workspace
isolation, and ``mcp_oauth`` refresh against a real token endpoint (each ``token_endpoint_auth``
type, garbage and refusals with nothing written, concurrent refreshes making one request).

The catalog is an in-memory stand-in for the session-store's answers (workspace-scoped like it);
secrets are written by the real ``Credentials`` and read back from OpenBao with the root token.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from corral.contracts.api.errors import not_found
from corral.contracts.clock import parse_rfc3339
from corral.contracts.credentials import CreateCredential, CredentialAction
from corral.contracts.operation import Operation
from corral.contracts.rpc import Page, StoreOps
from corral.credential_proxy.credentials import Credentials
from corral.credential_proxy.mcp_destinations import Rules, parse_destinations
from corral.credential_proxy.oauth_refresh import Refresher, RefreshFailed
from corral.credential_proxy.secret_store import SecretStore, credential_path
from corral.credential_proxy.session_credentials import SessionCredentials
from corral.credential_proxy.token_endpoint import TokenEndpoint, rules_vet
from corral.credential_proxy.vault import Vault
from tests.integration.credential_proxy.conftest import OpenBaoServer
from tests.token_endpoint import Received, TokenServer, serving_token_endpoint
from tests.waiting import eventually

pytestmark = pytest.mark.integration

WS, OTHER_WS = "wrkspc_sc", "wrkspc_other"
SESSION = "sesn_sc"


class Catalog:
    """The session-store's answers, scoped by workspace as it scopes them."""

    def __init__(self) -> None:
        self.vaults: dict[str, tuple[str, dict[str, Any]]] = {}
        self.credentials: dict[str, tuple[str, dict[str, Any]]] = {}
        self.saves = 0

    def add_vault(self, workspace_id: str, vault_id: str, *, archived: bool = False) -> str:
        at = "2026-01-01T00:00:00Z"
        body: dict[str, Any] = {"type": "vault", "id": vault_id, "display_name": vault_id, "metadata": {}}
        body |= {"archived_at": at if archived else None, "created_at": at, "updated_at": at}
        self.vaults[vault_id] = (workspace_id, body)
        return vault_id

    async def __call__(self, op: Operation[Any, Any], request: BaseModel) -> Any:
        req: Any = request
        if op is StoreOps.VAULTS_GET:
            found = self.vaults.get(req.id)
            if found is None or found[0] != req.workspace_id:
                raise not_found("vault", req.id)
            return found[1]
        if op is StoreOps.CREDENTIALS_GET:
            got = self.credentials.get(req.id)
            if got is None or got[0] != req.workspace_id or got[1]["vault_id"] != req.vault_id:
                raise not_found("credential", req.id)
            return got[1]
        if op is StoreOps.CREDENTIALS_LIST:
            data = [
                body
                for ws, body in self.credentials.values()
                if ws == req.workspace_id
                and body["vault_id"] == req.vault_id
                and (req.include_archived or body["archived_at"] is None)
            ]
            return Page(data=data)
        if op is StoreOps.CREDENTIALS_SAVE:
            self.saves += 1
            self.credentials[req.credential["id"]] = (req.workspace_id, req.credential)
            return req.credential
        raise AssertionError(op.name)


def soon(seconds: int) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def secrets(vault: OpenBaoServer) -> AsyncIterator[SecretStore]:
    async with Vault(vault.settings(), timeout=2).running() as client:
        yield SecretStore(client.client, timeout_s=5)


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    with serving_token_endpoint() as server:
        yield server


def endpoint_for(server: TokenServer, *, admitted: bool = True) -> TokenEndpoint:
    """The MCP client's destination rules, with the test endpoint admitted (or not) as an operator would."""
    admit = parse_destinations([f"127.0.0.1:{server.port}"] if admitted else [])
    return TokenEndpoint(rules_vet(Rules(own_addresses=lambda: (), admitted=admit)), timeout_s=5)


class Setup:
    def __init__(self, secrets: SecretStore, server: TokenServer, *, admitted: bool = True) -> None:
        self.catalog = Catalog()
        self.secrets = secrets
        self.credentials = Credentials(secrets=secrets, store=self.catalog)
        self.refresher = Refresher(
            secrets=secrets, store=self.catalog, endpoint=endpoint_for(server, admitted=admitted)
        )
        self.resolver = SessionCredentials(secrets=secrets, store=self.catalog, refresher=self.refresher)

    async def create(self, vault_id: str, auth: dict[str, Any], workspace_id: str = WS) -> dict[str, Any]:
        request = CreateCredential(workspace_id=workspace_id, vault_id=vault_id, params={"auth": auth})
        return await self.credentials.create(request)

    async def stored(self, vault_id: str, credential_id: str, workspace_id: str = WS) -> dict[str, str] | None:
        return await self.secrets.read(credential_path(workspace_id, vault_id, credential_id))


def oauth(server: TokenServer, kind: str, *, access: str, expires_at: str | None, url: str) -> dict[str, Any]:
    endpoint_auth: dict[str, Any] = {"type": kind}
    if kind != "none":
        endpoint_auth["client_secret"] = "client-secret-value"
    return {
        "type": "mcp_oauth",
        "mcp_server_url": url,
        "access_token": access,
        "expires_at": expires_at,
        "refresh": {
            "refresh_token": "refresh-1",
            "client_id": "corral client",
            "token_endpoint": server.url,
            "token_endpoint_auth": endpoint_auth,
            "scope": "read write",
        },
    }


@pytest.mark.parametrize("kind", ["none", "client_secret_basic", "client_secret_post"])
async def test_an_expiring_token_is_refreshed_and_written_back(
    secrets: SecretStore, token_server: TokenServer, kind: str, vault: OpenBaoServer
) -> None:
    setup = Setup(secrets, token_server)
    vault_id = setup.catalog.add_vault(WS, f"vlt_refresh_{kind}")
    made = await setup.create(
        vault_id, oauth(token_server, kind, access="old-access", expires_at=soon(10), url="https://mcp.example.com/mcp")
    )

    headers = await setup.resolver.mcp_headers(WS, SESSION, (vault_id,), "https://mcp.example.com/mcp")
    assert headers == {"Authorization": f"Bearer {token_server.issued[-1]}"}

    [request] = token_server.received
    assert request.form["grant_type"] == "refresh_token" and request.form["refresh_token"] == "refresh-1"
    assert request.form["scope"] == "read write"
    if kind == "none":
        assert request.form["client_id"] == "corral client" and "client_secret" not in request.form
        assert "authorization" not in request.headers
    elif kind == "client_secret_basic":
        assert "client_id" not in request.form and "client_secret" not in request.form
        # RFC 6749 2.3.1: the id and secret form-urlencoded (a space is "+")
        assert (
            request.headers["authorization"]
            == "Basic " + base64.b64encode(b"corral+client:client-secret-value").decode()
        )
    else:
        assert request.form["client_id"] == "corral client"
        assert request.form["client_secret"] == "client-secret-value"
        assert "authorization" not in request.headers

    stored = await setup.stored(vault_id, made["id"])
    expected = {"access_token": token_server.issued[-1], "refresh_token": token_server.refresh_tokens[-1]}
    if kind != "none":
        expected["client_secret"] = "client-secret-value"
    assert stored == expected
    async with httpx.AsyncClient(headers={"X-Vault-Token": vault.server.root_token}) as bao:
        path = credential_path(WS, vault_id, made["id"])
        versions = (await bao.get(f"{vault.server.addr}/v1/corral/metadata/{path}")).json()["data"]["versions"]
        assert len(versions) == 1, "the refreshed token replaced the old one, no history kept"
    public = setup.catalog.credentials[made["id"]][1]
    expires = parse_rfc3339(public["auth"]["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert "access" not in json.dumps(public), "the catalog holds no token"

    # the new token is used from now on, without another request
    again = await setup.resolver.mcp_headers(WS, SESSION, (vault_id,), "https://mcp.example.com/mcp/")
    assert again == headers and len(token_server.received) == 1


async def test_basic_auth_escapes_the_client_id_and_secret(secrets: SecretStore, token_server: TokenServer) -> None:
    setup = Setup(secrets, token_server)
    vault_id = setup.catalog.add_vault(WS, "vlt_basic_escape")
    auth = oauth(token_server, "client_secret_basic", access="a", expires_at=soon(5), url="https://m.example.com")
    auth["refresh"]["client_id"] = "id:with/odd&chars"
    auth["refresh"]["token_endpoint_auth"]["client_secret"] = "s3cr:t +x"
    await setup.create(vault_id, auth)
    await setup.resolver.mcp_headers(WS, SESSION, (vault_id,), "https://m.example.com/x")
    encoded = token_server.received[0].headers["authorization"].removeprefix("Basic ")
    assert base64.b64decode(encoded).decode() == "id%3Awith%2Fodd%26chars:s3cr%3At+%2Bx"


async def test_a_refused_token_is_refreshed_once_and_concurrent_refreshes_make_one_request(
    secrets: SecretStore, token_server: TokenServer
) -> None:
    setup = Setup(secrets, token_server)
    vault_id = setup.catalog.add_vault(WS, "vlt_concurrent")
    made = await setup.create(
        vault_id, oauth(token_server, "none", access="live-access", expires_at=soon(3600), url="https://m.example")
    )
    url = "https://m.example/mcp"
    first = await setup.resolver.mcp_headers(WS, SESSION, (vault_id,), url)
    assert first == {"Authorization": "Bearer live-access"} and token_server.received == []

    token_server.hold.clear()  # the endpoint waits until both refreshes are under way
    other = SessionCredentials(secrets=secrets, store=setup.catalog, refresher=setup.refresher)
    calls = [
        asyncio.create_task(setup.resolver.mcp_headers(WS, SESSION, (vault_id,), url, rejected=first)),
        asyncio.create_task(other.mcp_headers(WS, "sesn_other", (vault_id,), url, rejected=first)),
    ]

    async def both_under_way() -> bool:
        return setup.refresher.waiting(WS, vault_id, made["id"]) == 2 and len(token_server.received) == 1

    await eventually(both_under_way, timeout=10)
    token_server.hold.set()
    results = await asyncio.gather(*calls)
    assert len(token_server.received) == 1, "two refreshes of one credential make one request"
    assert results == [{"Authorization": f"Bearer {token_server.issued[0]}"}] * 2

    # a caller still holding the old token after the refresh gets the new one, with no request
    late = await SessionCredentials(secrets=secrets, store=setup.catalog, refresher=setup.refresher).mcp_headers(
        WS, "sesn_late", (vault_id,), url, rejected=first
    )
    assert late == results[0] and len(token_server.received) == 1


def bad(status: int, content_type: str, body: bytes) -> Any:
    def answer(_request: Received) -> tuple[int, str, bytes]:
        return status, content_type, body

    return answer


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (bad(200, "text/html", b"<html>login</html>"), "not an OAuth token response (not a JSON object)"),
        (bad(200, "application/json", b'{"token": "x"}'), "(no access_token)"),
        (bad(200, "application/json", b'{"access_token": "a b"}'), "access_token is not printable"),
        (bad(200, "application/json", b'{"access_token": "x", "token_type": "mac"}'), "token_type is not Bearer"),
        (bad(200, "application/json", b'{"access_token": "x", "expires_in": "soon"}'), "expires_in is not"),
        (bad(400, "application/json", b'{"error": "invalid_grant"}'), "HTTP 400 (invalid_grant)"),
        (bad(401, "text/plain", b"no"), "refused to refresh credential"),
        (bad(503, "text/plain", b"down"), "HTTP 503"),
    ],
    ids=["html", "no-token", "spaces", "mac", "expires-in", "invalid-grant", "401", "503"],
)
async def test_a_bad_answer_is_a_clear_error_and_nothing_is_written(
    secrets: SecretStore, token_server: TokenServer, answer: Any, message: str
) -> None:
    setup = Setup(secrets, token_server)
    vault_id = setup.catalog.add_vault(WS, "vlt_garbage")
    made = await setup.create(
        vault_id, oauth(token_server, "client_secret_post", access="old", expires_at=soon(5), url="https://g.example")
    )
    before_secret = await setup.stored(vault_id, made["id"])
    before_public = dict(setup.catalog.credentials[made["id"]][1])
    saves = setup.catalog.saves
    token_server.answer = answer
    with pytest.raises(RefreshFailed) as failed:
        await setup.resolver.mcp_headers(WS, SESSION, (vault_id,), "https://g.example/mcp")
    assert message in str(failed.value) and made["id"] in str(failed.value)
    assert "refresh-1" not in str(failed.value) and "client-secret-value" not in str(failed.value)
    assert await setup.stored(vault_id, made["id"]) == before_secret, "nothing half-written in OpenBao"
    assert setup.catalog.credentials[made["id"]][1] == before_public and setup.catalog.saves == saves


async def test_a_token_endpoint_the_destination_rules_refuse_is_never_asked(
    secrets: SecretStore, token_server: TokenServer
) -> None:
    setup = Setup(secrets, token_server, admitted=False)
    vault_id = setup.catalog.add_vault(WS, "vlt_refused")
    made = await setup.create(
        vault_id, oauth(token_server, "none", access="old", expires_at=soon(5), url="https://r.example/mcp")
    )
    refusal = r"token endpoint 127\.0\.0\.1:\d+ refused: it is .*loopback.*CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS"
    with pytest.raises(RefreshFailed, match=refusal):
        await setup.resolver.mcp_headers(WS, SESSION, (vault_id,), "https://r.example/mcp")
    assert token_server.received == []
    assert (await setup.stored(vault_id, made["id"]) or {}).get("access_token") == "old"


async def test_a_credential_with_no_refresh_is_used_as_it_is(secrets: SecretStore, token_server: TokenServer) -> None:
    setup = Setup(secrets, token_server)
    vault_id = setup.catalog.add_vault(WS, "vlt_norefresh")
    auth = {"type": "mcp_oauth", "mcp_server_url": "https://n.example", "access_token": "only", "expires_at": soon(5)}
    await setup.create(vault_id, auth)
    headers = await setup.resolver.mcp_headers(WS, SESSION, (vault_id,), "https://n.example/mcp")
    assert headers == {"Authorization": "Bearer only"}
    refused = await setup.resolver.mcp_headers(WS, SESSION, (vault_id,), "https://n.example/mcp", rejected=headers)
    assert refused == headers and token_server.received == []  # nothing to refresh with: the caller gives up


async def test_mcp_credentials_are_matched_by_url_within_the_sessions_workspace(
    secrets: SecretStore, token_server: TokenServer
) -> None:
    setup = Setup(secrets, token_server)
    first = setup.catalog.add_vault(WS, "vlt_match_a")
    second = setup.catalog.add_vault(WS, "vlt_match_b")
    theirs = setup.catalog.add_vault(OTHER_WS, "vlt_match_theirs")
    archived_vault = setup.catalog.add_vault(WS, "vlt_match_archived")
    await setup.create(first, {"type": "static_bearer", "mcp_server_url": "https://Api.Example.com", "token": "origin"})
    await setup.create(
        second, {"type": "static_bearer", "mcp_server_url": "https://api.example.com:443/mcp/", "token": "mcp-path"}
    )
    await setup.create(first, {"type": "static_bearer", "mcp_server_url": "http://api.example.com/mcp", "token": "h"})
    await setup.create(
        theirs, {"type": "static_bearer", "mcp_server_url": "https://other.example.com", "token": "theirs"}, OTHER_WS
    )
    gone = await setup.create(
        second, {"type": "static_bearer", "mcp_server_url": "https://gone.example.com", "token": "gone"}
    )
    await setup.credentials.archive(CredentialAction(workspace_id=WS, vault_id=second, id=gone["id"]))
    await setup.create(
        archived_vault, {"type": "static_bearer", "mcp_server_url": "https://archived.example.com", "token": "arch"}
    )
    setup.catalog.add_vault(WS, archived_vault, archived=True)
    vaults = (first, second, theirs, archived_vault)

    async def header(url: str) -> str | None:
        return (await setup.resolver.mcp_headers(WS, SESSION, vaults, url)).get("Authorization")

    assert await header("https://api.example.com/mcp") == "Bearer mcp-path"  # the longest path wins
    assert await header("https://API.example.com./mcp/sse?x=1") == "Bearer mcp-path"
    assert await header("https://api.example.com/a/../mcp/%7Etools") == "Bearer mcp-path"
    assert await header("https://api.example.com/mcpx") == "Bearer origin"  # whole segments only
    assert await header("https://api.example.com/") == "Bearer origin"
    assert await header("http://api.example.com/mcp/x") == "Bearer h"  # the scheme is part of the match
    assert await header("https://api.example.com:8443/mcp") is None  # so is the port
    assert await header("https://other.example.com/") is None, "another workspace's vault is never used"
    assert await header("https://gone.example.com/") is None, "an archived credential is not used"
    assert await header("https://archived.example.com/") is None, "an archived vault's credentials are not used"
    assert await header("not a url") is None
    # the other workspace's own session gets its credential
    theirs_headers = await setup.resolver.mcp_headers(OTHER_WS, "sesn_theirs", (theirs,), "https://other.example.com")
    assert theirs_headers == {"Authorization": "Bearer theirs"}


async def test_environment_variable_credentials_are_found_by_host(
    secrets: SecretStore, token_server: TokenServer
) -> None:
    setup = Setup(secrets, token_server)
    vault_id = setup.catalog.add_vault(WS, "vlt_env")
    archived_vault = setup.catalog.add_vault(WS, "vlt_env_archived")
    limited = {"type": "limited", "allowed_hosts": ["api.example.com", "*.example.org"]}
    await setup.create(
        vault_id, {"type": "environment_variable", "secret_name": "API", "secret_value": "v1", "networking": limited}
    )
    await setup.create(
        vault_id,
        {
            "type": "environment_variable",
            "secret_name": "ANY",
            "secret_value": "v2",
            "networking": {"type": "unrestricted"},
            "injection_location": {"header": False, "body": True},
        },
    )
    await setup.create(
        vault_id, {"type": "static_bearer", "mcp_server_url": "https://api.example.com", "token": "not-env"}
    )
    unrestricted = {"type": "unrestricted"}
    await setup.create(
        archived_vault,
        {"type": "environment_variable", "secret_name": "OLD", "secret_value": "v3", "networking": unrestricted},
    )
    setup.catalog.add_vault(WS, archived_vault, archived=True)
    vaults = (vault_id, archived_vault, "vlt_unknown")

    async def names(host: str) -> list[tuple[str, str, bool, bool]]:
        found = await setup.resolver.environment_credentials(WS, SESSION, vaults, host)
        assert all(c.vault_id == vault_id for c in found)
        return [(c.secret_name, c.value, c.header, c.body) for c in found]

    assert await names("api.example.com") == [("API", "v1", True, False), ("ANY", "v2", False, True)]
    assert await names("API.EXAMPLE.COM.") == [("API", "v1", True, False), ("ANY", "v2", False, True)]
    assert await names("deep.sub.example.org") == [("API", "v1", True, False), ("ANY", "v2", False, True)]
    assert await names("example.org") == [("ANY", "v2", False, True)]  # *.example.org: subdomains only
    assert await names("evil-example.com") == [("ANY", "v2", False, True)]
    assert await setup.resolver.environment_credentials(OTHER_WS, SESSION, vaults, "api.example.com") == []
    assert "v1" not in repr(await setup.resolver.environment_credentials(WS, SESSION, vaults, "api.example.com"))
