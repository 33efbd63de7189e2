"""The admin API on the real stack: workspaces and API keys (``/v1/organizations/...``).

Only a key with role ``admin`` reaches it; a key is shown once and listed by hint; a revoked key is
refused within one second by every gateway process, although each had just served it (the key cache
trusts a key for 30 s); a key's own rate limit is applied by every gateway; and a second workspace
sees none of the first's objects through the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from corral.devstack.stack import Stack
from tests.e2e.flows import unique
from tests.e2e.test_bad_input import assert_error
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

ADMIN = "/v1/organizations"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def second_gateway(stack: Stack, log_path: Path) -> Iterator[str]:
    """Another gateway process on the same stack (its own port, the stack's NATS user), stopped by pid."""
    port = _free_port()
    env = {
        **stack.service("gateway", stack.service_context()).env,
        "CORRAL_GATEWAY_PORT": str(port),
        "CORRAL_GATEWAY_METRICS_PORT": "0",  # the stack's gateway serves its metrics on the stack's port
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "corral.gateway"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the second gateway exited: {log_path.read_text(errors='replace')}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the second gateway did not become healthy within 60 s"
            time.sleep(0.1)  # polling another process's readiness (nothing to await)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    refused = [line for line in log_path.read_text(errors="replace").splitlines() if "permissions violation" in line]
    assert not refused, f"NATS refused the second gateway something it does: {refused}"


@pytest.fixture(scope="module")
def gateways(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two gateway processes: the stack's and a second one started here."""
    with second_gateway(stack, tmp_path_factory.mktemp("gateway-2") / "gateway-2.log") as url:
        yield [stack.gateway_url, url]


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The admin key the launcher made (``.corral/admin-key``), on the stack's gateway."""
    headers = {"x-api-key": stack.admin_api_key}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=30) as c:
        yield c


async def new_workspace(admin: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await admin.post(f"{ADMIN}/workspaces", json={"name": name})
    assert response.status_code == 200, response.text
    workspace: dict[str, Any] = response.json()
    return workspace


async def new_key(admin: httpx.AsyncClient, workspace_id: str, **fields: Any) -> dict[str, Any]:
    response = await admin.post(f"{ADMIN}/api_keys", json={"name": "e2e", "workspace_id": workspace_id, **fields})
    assert response.status_code == 200, response.text
    key: dict[str, Any] = response.json()
    return key


async def status_with(url: str, key: str) -> int:
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": key}, timeout=10) as c:
        return (await c.get("/v1/agents", params={"limit": 1})).status_code


async def test_only_an_admin_key_reaches_the_admin_api(stack: Stack, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{ADMIN}/workspaces")  # the dev key: a workspace key, role user
    body = assert_error(response, 403, "permission_error", "role `admin`")
    assert "admin key" in body["error"]["message"]
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as anonymous:
        assert_error(await anonymous.get(f"{ADMIN}/api_keys"), 401, "authentication_error", "missing API key")
    assert (stack.state.admin_key_file.stat().st_mode & 0o777) == 0o600


async def test_workspaces_and_keys_are_created_listed_and_the_key_shown_once(
    stack: Stack, admin: httpx.AsyncClient
) -> None:
    workspace = await new_workspace(admin, "team-list")
    assert workspace["type"] == "workspace" and workspace["id"].startswith("wrkspc_")
    assert workspace["archived_at"] is None
    assert (await admin.get(f"{ADMIN}/workspaces/{workspace['id']}")).json() == workspace
    listed = (await admin.get(f"{ADMIN}/workspaces", params={"limit": 1000})).json()
    ids = [w["id"] for w in listed["data"]]
    assert "default" in ids and workspace["id"] in ids and listed["has_more"] is False

    created = await new_key(admin, workspace["id"], rate_limit={"requests_per_second": 50, "burst": 100})
    secret = created["key"]
    assert secret.startswith("sk-corral-api-") and created["status"] == "active" and created["role"] == "user"
    assert created["partial_key_hint"] == f"{secret[:16]}...{secret[-4:]}"
    assert created["rate_limit"] == {"requests_per_second": 50.0, "burst": 100}
    # the key works at once, in its own workspace
    assert await status_with(stack.gateway_url, secret) == 200

    listing = await admin.get(f"{ADMIN}/api_keys", params={"workspace_id": workspace["id"]})
    assert listing.status_code == 200, listing.text
    assert [k["id"] for k in listing.json()["data"]] == [created["id"]]
    assert secret not in listing.text and "key" not in listing.json()["data"][0]
    fetched = await admin.get(f"{ADMIN}/api_keys/{created['id']}")
    assert secret not in fetched.text and fetched.json()["partial_key_hint"] == created["partial_key_hint"]

    # paging by id
    second = await new_key(admin, workspace["id"])
    page = (await admin.get(f"{ADMIN}/api_keys", params={"workspace_id": workspace["id"], "limit": 1})).json()
    assert page["has_more"] is True and page["last_id"] == created["id"]
    rest = await admin.get(f"{ADMIN}/api_keys", params={"workspace_id": workspace["id"], "after_id": page["last_id"]})
    assert [k["id"] for k in rest.json()["data"]] == [second["id"]]

    # bad input is a 400 or 404 that says what to do
    no_workspace = await admin.post(f"{ADMIN}/api_keys", json={"name": "x"})
    assert_error(no_workspace, 400, "invalid_request_error", "workspace_id")
    missing = await admin.post(f"{ADMIN}/api_keys", json={"name": "x", "workspace_id": "wrkspc_01NOPE"})
    assert missing.status_code == 404, missing.text
    assert (await admin.get(f"{ADMIN}/api_keys/apikey_01NOPE")).status_code == 404


async def test_a_revoked_key_gets_401_within_one_second_on_every_gateway(
    gateways: list[str], admin: httpx.AsyncClient
) -> None:
    created = await new_key(admin, "default", name="revoked-e2e")
    key = created["key"]
    for url in gateways:  # each gateway serves the key (and would trust it for 30 s)
        assert await status_with(url, key) == 200
        assert await status_with(url, key) == 200

    revoked = await admin.post(f"{ADMIN}/api_keys/{created['id']}", json={"status": "archived"})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "archived"

    async def refused_everywhere() -> bool:
        codes = await asyncio.gather(*(status_with(url, key) for url in gateways))
        return all(code == 401 for code in codes)

    await eventually(refused_everywhere, timeout=1.0, every=0.02)  # TimeoutError after one second
    for url in gateways:
        async with httpx.AsyncClient(base_url=url, headers={"x-api-key": key}, timeout=10) as c:
            assert_error(await c.get("/v1/agents"), 401, "authentication_error", "revoked")
    # revocation is permanent
    again = await admin.post(f"{ADMIN}/api_keys/{created['id']}", json={"status": "active"})
    assert_error(again, 400, "invalid_request_error", "create a new key")


async def test_a_suspended_key_stops_and_resumes_on_every_gateway(
    gateways: list[str], admin: httpx.AsyncClient
) -> None:
    created = await new_key(admin, "default", name="suspended-e2e")
    key = created["key"]
    for url in gateways:
        assert await status_with(url, key) == 200
    await admin.post(f"{ADMIN}/api_keys/{created['id']}", json={"status": "inactive"})

    async def all_answer(code: int) -> bool:
        return all(c == code for c in await asyncio.gather(*(status_with(url, key) for url in gateways)))

    await eventually(lambda: all_answer(401), timeout=1.0, every=0.02)
    await admin.post(f"{ADMIN}/api_keys/{created['id']}", json={"status": "active"})
    await eventually(lambda: all_answer(200), timeout=1.0, every=0.02)


async def test_a_keys_own_rate_limit_is_applied_by_every_gateway(gateways: list[str], admin: httpx.AsyncClient) -> None:
    created = await new_key(admin, "default", name="limited-e2e")
    key, key_id = created["key"], created["id"]
    for url in gateways:
        assert await status_with(url, key) == 200  # the defaults (a burst of 500)

    limit = {"requests_per_second": 0.01, "burst": 1}
    response = await admin.post(f"{ADMIN}/api_keys/{key_id}", json={"rate_limit": limit})
    assert response.status_code == 200 and response.json()["rate_limit"] == limit

    for url in gateways:

        async def limited(url: str = url) -> bool:
            return await status_with(url, key) == 429

        await eventually(limited, timeout=5.0)
        async with httpx.AsyncClient(base_url=url, headers={"x-api-key": key}, timeout=10) as c:
            assert_error(await c.get("/v1/agents"), 429, "rate_limit_error", "rate limit")

    cleared = await admin.post(f"{ADMIN}/api_keys/{key_id}", json={"rate_limit": None})
    assert cleared.status_code == 200 and cleared.json()["rate_limit"] is None
    for url in gateways:

        async def served(url: str = url) -> bool:
            return await status_with(url, key) == 200

        await eventually(served, timeout=5.0)


async def test_a_second_workspace_sees_none_of_the_firsts_objects(
    stack: Stack, client: anthropic.AsyncAnthropic, admin: httpx.AsyncClient
) -> None:
    # workspace A: the dev key's ("default")
    agent = await client.beta.agents.create(name="a-only", model="claude-sonnet-4-6")
    environment = await client.beta.environments.create(name=f"a-only-{agent.id.lower()}")
    session = await client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    vault = await client.beta.vaults.create(display_name="a-only")

    workspace_b = await new_workspace(admin, unique("team-b"))
    key_b = (await new_key(admin, workspace_b["id"], name="b"))["key"]
    async with anthropic.AsyncAnthropic(base_url=stack.gateway_url, api_key=key_b, max_retries=0) as b:
        for fetch in (
            lambda: b.beta.agents.retrieve(agent.id),
            lambda: b.beta.environments.retrieve(environment.id),
            lambda: b.beta.sessions.retrieve(session.id),
            lambda: b.beta.vaults.retrieve(vault.id),
        ):
            with pytest.raises(anthropic.NotFoundError):
                await fetch()
        assert (await b.beta.agents.list()).data == []
        assert (await b.beta.environments.list()).data == []
        assert (await b.beta.sessions.list()).data == []
        assert (await b.beta.vaults.list()).data == []
        with pytest.raises(anthropic.NotFoundError):
            await b.beta.sessions.events.send(
                session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "hi"}]}]
            )
        # B's own objects are B's
        mine = await b.beta.agents.create(name="b-only", model="claude-sonnet-4-6")
        assert [a.id for a in (await b.beta.agents.list()).data] == [mine.id]
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.agents.retrieve(mine.id)


async def test_archiving_a_workspace_revokes_its_keys(stack: Stack, admin: httpx.AsyncClient) -> None:
    workspace = await new_workspace(admin, "team-archived")
    key = (await new_key(admin, workspace["id"]))["key"]
    assert await status_with(stack.gateway_url, key) == 200
    archived = await admin.post(f"{ADMIN}/workspaces/{workspace['id']}/archive")
    assert archived.status_code == 200 and archived.json()["archived_at"] is not None

    async def refused() -> bool:
        return await status_with(stack.gateway_url, key) == 401

    await eventually(refused, timeout=1.0, every=0.02)
    listed = (await admin.get(f"{ADMIN}/workspaces")).json()
    assert workspace["id"] not in [w["id"] for w in listed["data"]]
    more = await admin.post(f"{ADMIN}/api_keys", json={"name": "x", "workspace_id": workspace["id"]})
    assert_error(more, 400, "invalid_request_error", "archived")
    default = await admin.post(f"{ADMIN}/workspaces/default/archive")
    assert_error(default, 400, "invalid_request_error", "bootstrap")
