"""Credential hosts not reached, with two sandbox hosts each beside its own credential-proxy: every
failing egress call of a session placed on the second host is one ``credential_host_unreachable_error``
logged with that call's result, before the next model request, every time.

The stack runs two sandbox hosts (``CORRAL_SANDBOX_HOSTS=2``: ``sandbox-manager``, the machine's host
id, and ``sandbox-manager-2``, ``sandbox-host-2``, each its own Docker engine) and two credential-proxies
(``CORRAL_CREDENTIAL_PROXY_COUNT=2``), paired as they would be on two machines: credential-proxy
``egress-a`` with the first host, ``egress-b`` with the second (``CORRAL_CREDENTIAL_PROXY_HOST_ID``,
``CORRAL_SANDBOX_EGRESS_HOST``). Each session is placed on the second host by writing its placement
before its first call, as the harness's placement step would when that host is the better one.

The notes are in the memory of ``egress-b``, which holds the session's socket. Before the harness
asked the credential-proxy of the session's sandbox host, it asked the queue group every
credential-proxy serves: about half of the asks reached ``egress-a``, which answered empty, and the
note came with a later call by chance (``2 attempts``), or never.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from corral.bus import Bus
from corral.contracts.sandbox import SandboxHost, SandboxPlacement
from corral.contracts.sandbox_hosts import sandbox_hosts_spec, sandbox_placements_spec
from corral.devstack.replicas import host_id
from corral.devstack.stack import Stack
from tests.e2e.conftest import DOWN_ADDRESS, EgressSites, assert_no_permission_violations, start_stack
from tests.e2e.flows import all_events, open_stream, read_until_idle, script, send_text, unique
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

EGRESS_A, EGRESS_B = "egress-a", "egress-b"
HOST_B = str(host_id(2))
#: Sessions placed on the second host, and failing calls in each: each call's note is asked for once,
#: so a harness asking either credential-proxy at random would pass about one run in 2**6.
SESSIONS, CALLS = 2, 3
CURL = "curl -fsS -o /dev/null -w '%{url_effective} %{http_code}\\n'"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, egress_sites: EgressSites) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("corral-credential-hosts")
    stack = start_stack(
        state,
        egress_sites=egress_sites,
        environ={"CORRAL_SANDBOX_HOSTS": "2", "CORRAL_CREDENTIAL_PROXY_COUNT": "2"},
        credential_proxy={"CORRAL_CREDENTIAL_PROXY_HOST_ID": EGRESS_A},
        sandbox_manager={"CORRAL_SANDBOX_EGRESS_HOST": EGRESS_A},
        replicas={
            "credential-proxy-2": {
                "CORRAL_CREDENTIAL_PROXY_HOST_ID": EGRESS_B,
                "CORRAL_CREDENTIAL_PROXY_EGRESS_STATE_DIR": str(state / "egress-state-b"),
            },
            "sandbox-manager-2": {"CORRAL_SANDBOX_EGRESS_HOST": EGRESS_B},
        },
    )
    try:
        yield stack
        assert_no_permission_violations(stack)
    finally:
        stack.stop()


@pytest.fixture(scope="module")
async def client(stack: Stack) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=stack.gateway_url, api_key=stack.api_key, max_retries=0, timeout=60
    ) as sdk:
        yield sdk


def bash(command: str) -> dict[str, Any]:
    return {"type": "tool_use", "name": "bash", "input": {"command": command}}


async def advertised(bus: Bus) -> dict[str, SandboxHost]:
    hosts = await bus.bind_key_value(sandbox_hosts_spec())
    found: dict[str, SandboxHost] = {}
    if hosts is None:
        return found
    for key in await hosts.keys():
        entry = await hosts.get(key)
        if entry is not None:
            found[key] = SandboxHost.model_validate_json(entry.value)
    return found


async def test_each_unreachable_credential_host_on_the_second_machine_is_logged_with_its_call(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, bus: Bus, egress_sites: EgressSites
) -> None:
    async def both_hosts_ready() -> bool:
        ads = await advertised(bus)
        return len(ads) == 2 and all(ad.ready for ad in ads.values())

    await eventually(both_hosts_ready, timeout=180, every=0.2)
    ads = await advertised(bus)
    assert ads[HOST_B].egress_host == EGRESS_B, "the second host advertises the credential-proxy it egresses through"
    assert {ad.egress_host for name, ad in ads.items() if name != HOST_B} == {EGRESS_A}
    placements = await bus.bind_key_value(sandbox_placements_spec())
    assert placements is not None

    down_url = f"https://{DOWN_ADDRESS}:{egress_sites.bound.port}/a"
    vault = await client.beta.vaults.create(display_name=unique("credential-hosts-b"))
    credential = await client.beta.vaults.credentials.create(
        vault.id,
        auth={
            "type": "environment_variable",
            "secret_name": "DOWN_TOKEN",
            "secret_value": "not-a-secret-of-this-test",
            "networking": {"type": "limited", "allowed_hosts": [DOWN_ADDRESS]},
        },
    )
    agent = await client.beta.agents.create(
        name=unique("credential-hosts-b"), model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    env = await client.beta.environments.create(
        name=unique("credential-hosts-b"),
        config={"type": "cloud", "networking": {"type": "limited", "allowed_hosts": [DOWN_ADDRESS]}},
    )
    for _ in range(SESSIONS):
        session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id, vault_ids=[vault.id])
        await placements.create(session.id, SandboxPlacement(host=HOST_B, at=time.time()).model_dump_json().encode())
        name = unique("credential-hosts-b")
        call = bash(f'{CURL} -H "Authorization: Bearer $DOWN_TOKEN" {down_url}; echo exit=$?')
        await script(model, name, *([call] for _ in range(CALLS)), [{"type": "text", "text": "Done."}])
        stream = await open_stream(client, session.id)
        async with stream:
            await send_text(client, session.id, f"{name}: call the API")
            events = await read_until_idle(stream, timeout=180)
        assert events[-1].stop_reason.type == "end_turn"

        logged = await all_events(client, session.id)
        types = [e.type for e in logged]
        results = [e for e in logged if e.type == "agent.tool_result"]
        assert len(results) == CALLS and all("error: 502" in str(r.content) for r in results), results
        errors = [e for e in logged if e.type == "session.error"]
        # one note per call, each logged just before that call's result (so before the next model request)
        assert [(e.error.type, e.error.credential_id, e.error.vault_id) for e in errors] == CALLS * [
            ("credential_host_unreachable_error", credential.id, vault.id)
        ], [e.error.message for e in errors]
        results_at = [i for i, t in enumerate(types) if t == "agent.tool_result"]
        assert [i for i, t in enumerate(types) if t == "session.error"] == [i - 1 for i in results_at], types
        assert all("attempts" not in e.error.message for e in errors), [e.error.message for e in errors]
        entry = await placements.get(session.id)
        assert entry is not None and SandboxPlacement.model_validate_json(entry.value).host == HOST_B
