"""Network access from a sandbox, end to end: the agent's ``bash`` in a real container, its only way
out the session's egress proxy in the credential-proxy (a unix socket mounted into the sandbox and
relayed from ``127.0.0.1:3128`` by the exec agent), deciding per request from the environment's
``networking``.

The Debian mirror over plain HTTP is the outside host here (this machine reaches it; HTTPS is
intercepted by a proxy whose certificate authority the sandbox image does not carry). This machine's
network answers DNS for it with a documentation-range address, which the stack's credential-proxy
allows explicitly (``CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES``, see ``tests.egress_network``)."""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess
from typing import Any

import anthropic
import docker
import httpx
import pytest

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.health import Health
from corral.devstack.stack import Stack
from tests.e2e.flows import all_events, open_stream, read_until_idle, script, send_text, unique
from tests.host_canary import HostCanary
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

MIRROR = "http://deb.debian.org/debian/dists/bookworm/Release"

#: Prints one JSON line: the interfaces, the proxy variables, whether the socket is mounted, a direct
#: connection's fate, and what fetching each URL through the proxy gave (status or error).
PROBE = r"""
import json, os, socket, sys, urllib.error, urllib.request
out = {
    "interfaces": sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]),
    "https_proxy": os.environ.get("https_proxy"),
    "socket_mounted": os.path.exists("/run/corral/egress/proxy.sock"),
    "hostname": socket.gethostname(),
}
try:
    socket.create_connection(("1.1.1.1", 80), timeout=3).close()
    out["direct"] = "connected"
except OSError as exc:
    out["direct"] = type(exc).__name__
fetched = {}
for url in sys.argv[1:]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            fetched[url] = [answer.status, answer.read(200).decode("latin-1")]
    except urllib.error.HTTPError as exc:
        fetched[url] = [exc.code, exc.read(1000).decode("latin-1")]
    except OSError as exc:
        fetched[url] = [None, repr(exc)]
out["fetched"] = fetched
print(json.dumps(out))
"""


async def probe(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, config: dict[str, Any] | None, *urls: str
) -> dict[str, Any]:
    """Run ``PROBE`` with ``urls`` through ``bash`` in a session of an environment with ``config``."""
    name = unique("egress")
    # without no_proxy, so even a loopback URL goes to the proxy (instead of the sandbox's own loopback)
    command = (
        f"cat > /tmp/probe.py <<'PY'\n{PROBE}\nPY\nenv -u no_proxy -u NO_PROXY python3 /tmp/probe.py {' '.join(urls)}"
    )
    await script(
        model,
        name,
        [{"type": "tool_use", "name": "bash", "input": {"command": command}}],
        [{"type": "text", "text": "Probed."}],
    )
    agent = await client.beta.agents.create(
        name="e2e egress", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    env_body: dict[str, Any] = {"name": unique("e2e-egress")}
    if config is not None:
        env_body["config"] = config
    env = await client.beta.environments.create(**env_body)
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    stream = await open_stream(client, session.id)
    async with stream:
        await send_text(client, session.id, f"{name}: probe the network")
        await read_until_idle(stream, timeout=120)
    [result] = [e for e in await all_events(client, session.id) if e.type == "agent.tool_result"]
    text = "\n".join(block.text for block in result.content if block.type == "text")
    assert not result.is_error, text
    line = next(line for line in text.splitlines() if line.startswith("{"))
    return dict(json.loads(line))


async def test_an_unrestricted_environment_reaches_public_hosts_only_through_its_proxy(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, stack: Stack
) -> None:
    gateway = f"http://127.0.0.1:{stack.ports.gateway}/health"
    host_loopback, metadata = "http://localhost/", "http://169.254.169.254/latest/meta-data/"
    seen = await probe(client, model, None, MIRROR, gateway, host_loopback, metadata)

    assert seen["interfaces"] == ["lo"]
    assert seen["direct"] != "connected"
    assert seen["socket_mounted"] is True
    assert seen["https_proxy"] == "http://127.0.0.1:3128"
    status, body = seen["fetched"][MIRROR]
    assert status == 200 and "Origin: Debian" in body, seen["fetched"][MIRROR]
    # the host's own services and the cloud metadata address are never reachable, whatever the policy
    for refused in (gateway, host_loopback, metadata):
        assert seen["fetched"][refused][0] == 403, seen["fetched"][refused]
    assert "loopback" in seen["fetched"][host_loopback][1]
    assert "link-local" in seen["fetched"][metadata][1]


def host_addresses() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address of this machine's interfaces, as ``ip -json address`` shows them."""
    ip = shutil.which("ip")
    assert ip is not None, "iproute2's ip is needed to list this machine's addresses"
    shown = json.loads(subprocess.run([ip, "-json", "address"], check=True, capture_output=True, text=True).stdout)
    return [ipaddress.ip_address(a["local"]) for link in shown for a in link.get("addr_info", []) if "local" in a]


def url(host: str | ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    authority = f"[{host}]" if isinstance(host, ipaddress.IPv6Address) else str(host)
    return f"http://{authority}:{port}/canary"


async def test_no_address_of_the_host_is_reachable_from_a_sandbox_by_address_or_by_name(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, host_canary: HostCanary
) -> None:
    """The canary server listens on every address of this machine, on a port the proxy lets sandboxes
    try; from an unrestricted sandbox none of those addresses, nor a name resolving to one, reaches it.
    The Debian mirror, which this machine's network resolves to a documentation-range address the
    stack's operator allows explicitly (``CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES``), still answers."""
    addresses = host_addresses()
    assert any(not (a.is_loopback or a.is_link_local) for a in addresses), addresses
    port = host_canary.port
    for address in addresses:  # the canary really is there: only the proxy's refusal keeps it from the sandbox
        if address.is_link_local:
            continue  # needs a zone to reach from here; the sandbox's request for it has none to give
        async with httpx.AsyncClient(trust_env=False, timeout=10) as direct:
            assert (await direct.get(url(address, port))).text == host_canary.canary, address
    names = ["localhost", socket.gethostname()]
    by_address = [url(a, port) for a in addresses]
    by_name = [url(n, port) for n in names]
    seen = await probe(client, model, None, MIRROR, *by_address, *by_name)

    leaked = [u for u in (*by_address, *by_name) if host_canary.canary in seen["fetched"][u][1]]
    assert leaked == [], f"the sandbox read this machine's canary through {leaked}"
    for refused in (*by_address, *by_name):
        status, body = seen["fetched"][refused]
        assert status == 403, (refused, seen["fetched"][refused])
        assert "CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES" in body
    for refused in by_address:
        body = seen["fetched"][refused][1]
        assert "an address of this machine" in body or "link-local" in body, (refused, body)
    for refused in by_name:
        assert "an address of this machine" in seen["fetched"][refused][1], refused
    status, body = seen["fetched"][MIRROR]
    assert status == 200 and "Origin: Debian" in body, seen["fetched"][MIRROR]


async def pools_full(bus: Bus) -> None:
    """Until the sandbox-manager's health says every warm pool is full (``<spec>:<n>/<n>``, ...)."""

    async def full() -> bool:  # the manager's health: nothing announces a refill
        answer = Health.model_validate_json(await bus.request(subjects.health("sandbox-manager"), b"{}"))
        pools = answer.details.get("pools", "none")
        fills = [p.rsplit(":", 1)[-1].split("/") for p in pools.split(",")]
        return pools != "none" and len(fills) >= 2 and all(have == size for have, size in fills)

    await eventually(full, timeout=120, every=0.1)


def container_of(stack: Stack, short_id: str) -> dict[str, Any]:
    client = docker.DockerClient(base_url=stack.docker_host)
    try:
        [container] = [c for c in client.containers.list() if c.id.startswith(short_id)]
        return dict(client.api.inspect_container(container.id))
    finally:
        client.close()


async def test_default_and_limited_sessions_claim_pooled_sandboxes_each_with_its_own_egress(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, stack: Stack, bus: Bus
) -> None:
    """With the API's default networking, the first tool call's sandbox comes from the warm pool (it
    was started before the session existed) and still reaches the outside through an egress socket
    of its own, with its own session's policy: the limited session next to it, from the same pool,
    is refused what the default one reaches."""
    await probe(client, model, None, MIRROR)  # a default environment's sandbox is wanted in the pool
    await pools_full(bus)
    default = await probe(client, model, None, MIRROR)
    await pools_full(bus)
    limited = await probe(
        client, model, {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": ["pypi.org"]}}, MIRROR
    )

    assert default["fetched"][MIRROR][0] == 200, default["fetched"][MIRROR]
    assert limited["fetched"][MIRROR][0] == 403 and "deb.debian.org" in limited["fetched"][MIRROR][1]
    containers = [container_of(stack, seen["hostname"]) for seen in (default, limited)]
    slots = []
    for container in containers:
        labels = container["Config"]["Labels"]
        assert labels.get("corral.pool") == "true", "started for the warm pool, not for the session"
        assert "corral.session_id" not in labels
        slots.append(labels["corral.egress_slot"])
        [mount] = [m for m in container["Mounts"] if m["Destination"] == "/run/corral/egress"]
        assert mount["Source"].endswith("/" + labels["corral.egress_slot"]) and not mount["RW"]
    assert slots[0] != slots[1], "each sandbox has an egress socket of its own"


async def test_a_limited_environment_reaches_only_its_allowed_hosts(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    limited = {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": ["pypi.org"]}}
    seen = await probe(client, model, limited, MIRROR)

    assert seen["interfaces"] == ["lo"]
    status, body = seen["fetched"][MIRROR]
    assert status == 403, seen["fetched"][MIRROR]
    assert "deb.debian.org" in body


async def test_a_limited_environment_that_allows_nothing_gets_no_proxy_at_all(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    closed = {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": []}}
    seen = await probe(client, model, closed, MIRROR)

    assert seen["interfaces"] == ["lo"]
    assert seen["socket_mounted"] is False
    assert seen["https_proxy"] is None
    assert seen["fetched"][MIRROR][0] is None  # no name resolution, no route: an error, not a status
