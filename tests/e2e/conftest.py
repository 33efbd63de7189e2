"""One private Corral stack for the e2e tests: real NATS JetStream, Postgres, OpenBao, the five
services (two harness processes in the shared ``stack``, for the takeover tests; one in a test's
own stack) and the embedded Messages-API model, on free ports in a temp dir.

Nothing here is faked: tests talk to the gateway with the official ``anthropic`` SDK or plain HTTP,
and to the bus with ``corral.bus``. If a component cannot start, every e2e test errors (never skips).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import pytest

from corral.bus import Bus
from corral.devstack.ports import Ports
from corral.devstack.stack import Stack
from tests.e2e.flows import LEASE_TTL_S
from tests.egress_network import stand_in_addresses
from tests.host_canary import HostCanary, serving_canary
from tests.https_site import Recorder, TestAuthority, serving_recorder
from tests.mcp_server import RunningMcpServer, free_port, serving_mcp
from tests.token_endpoint import TokenServer, serving_token_endpoint
from tests.web_site import Site, serving_site

#: A port of 127.0.0.1 the credential-proxy admits for MCP where nothing listens (a server that is down).
MCP_DOWN_PORT = free_port()

#: The loopback address the web tool tests' site listens on, admitted by the stack's credential-proxy
#: (``CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES``) as an operator admits a private service; 127.0.0.1 is not.
WEB_SITE_ADDRESS = "127.0.0.7"

#: Loopback addresses of the credentials-at-egress tests' servers (``EgressSites``), admitted like ``WEB_SITE_ADDRESS``.
BOUND_ADDRESS, UNBOUND_ADDRESS, ATTACKER_ADDRESS = "127.0.0.8", "127.0.0.9", "127.0.0.10"
#: A loopback address admitted like those where nothing listens: a credential's host that is down.
DOWN_ADDRESS = "127.0.0.11"


@dataclass
class EgressSites:
    """An HTTPS server an ``environment_variable`` credential is bound to, an HTTPS server it is not,
    and a plain-HTTP "attacker", all recording what they receive; ``ca_file`` is their CA, which the
    stack's credential-proxy trusts (``CORRAL_CREDENTIAL_PROXY_EGRESS_UPSTREAM_CA_FILE``) and the
    sandboxes do not."""

    bound: Recorder
    unbound: Recorder
    attacker: Recorder
    ca_file: Path

    @property
    def all(self) -> tuple[Recorder, Recorder, Recorder]:
        return (self.bound, self.unbound, self.attacker)


#: Short lease and ack wait so a killed harness's session is picked up within seconds.
FAST_RECOVERY = {
    "CORRAL_HARNESS_LEASE_TTL_S": LEASE_TTL_S,
    "CORRAL_HARNESS_ACK_WAIT_S": "4",
    "CORRAL_HARNESS_RETRY_BACKOFF_S": "0.2",
    # snapshots every few turns, so a session of a few dozen turns already has one
    "CORRAL_HARNESS_SNAPSHOT_EVERY_EVENTS": "40",
}


#: Where the test stacks' Docker engine keeps its images, so the sandbox image is built once per machine.
DOCKER_DATA_ROOT = "/var/tmp/corral-e2e-docker"


def _environ() -> dict[str, str]:
    """The test stack always uses the embedded model, whatever keys the developer has set."""
    drop = ("ANTHROPIC_", "CORRAL_MODEL_", "DATABASE_URL", "CORRAL_")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    environ["CORRAL_DOCKER_DATA_ROOT"] = os.environ.get("CORRAL_DOCKER_DATA_ROOT") or DOCKER_DATA_ROOT
    # every test stack runs the trace collector, and every service exports to it (tests.e2e.test_tracing)
    environ["CORRAL_TRACING"] = "1"
    return environ


def start_stack(
    state_dir: Path,
    host_canary: HostCanary | None = None,
    web_site: Site | None = None,
    mcp_server: RunningMcpServer | None = None,
    token_endpoint: TokenServer | None = None,
    egress_sites: EgressSites | None = None,
    credential_proxy: dict[str, str] | None = None,
    log_level: str = "INFO",
    gateway: dict[str, str] | None = None,
    environ: dict[str, str] | None = None,
    sandbox_manager: dict[str, str] | None = None,
    harness_count: int | None = None,
    replicas: dict[str, dict[str, str]] | None = None,
) -> Stack:
    """The stack; its credential-proxy allows this network's stand-ins for the outside hosts, as its
    operator would, and lets sandboxes try ``host_canary``'s port (which the address rules must refuse).
    With ``web_site``, it admits the site's address and port and uses it as its search backend.
    ``credential_proxy``: more settings of the credential-proxy (over those these make); ``gateway`` and
    ``sandbox_manager``: settings of those; ``environ``: stack settings over the test's
    (``CORRAL_NATS_CLUSTER``); ``harness_count``: harness processes (default one, as ``make up``);
    ``replicas``: settings of one replica by its name (``sandbox-manager-2``), over its kind's."""
    ports = [80, 443] if host_canary is None else [80, 443, host_canary.port]
    allowed = stand_in_addresses()
    egress = {}
    if web_site is not None:
        ports.append(web_site.port)
        allowed.append(web_site.address)
        egress["CORRAL_CREDENTIAL_PROXY_SEARCH_URL"] = web_site.url("")
    if egress_sites is not None:
        ports += [site.port for site in egress_sites.all]
        allowed += [site.address for site in egress_sites.all] + [DOWN_ADDRESS]
        egress["CORRAL_CREDENTIAL_PROXY_EGRESS_UPSTREAM_CA_FILE"] = str(egress_sites.ca_file)
        egress["CORRAL_CREDENTIAL_PROXY_EGRESS_STATE_DIR"] = str(state_dir / "egress-state")
    egress["CORRAL_CREDENTIAL_PROXY_EGRESS_PORTS"] = json.dumps(ports)
    egress["CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES"] = json.dumps(allowed)
    if mcp_server is not None:  # the test MCP server on this machine, admitted as an operator would
        admitted = [f"127.0.0.1:{mcp_server.port}", f"127.0.0.1:{MCP_DOWN_PORT}"]
        if token_endpoint is not None:  # the OAuth token endpoint of the test credentials, likewise
            admitted.append(f"127.0.0.1:{token_endpoint.port}")
        egress["CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS"] = ",".join(admitted)
        egress["CORRAL_CREDENTIAL_PROXY_MCP_CONNECT_TIMEOUT_S"] = "5"
    egress.update(credential_proxy or {})
    stack = Stack(
        state_dir,
        Ports.free(),
        environ=_environ() | (environ or {}),
        harness_count=harness_count,
        docker=True,
        service_env={
            "harness": FAST_RECOVERY,
            # the lease bucket's owner makes it with the harness's lease TTL (a harness refuses another)
            "session-store": {"CORRAL_HARNESS_LEASE_TTL_S": LEASE_TTL_S},
            "credential-proxy": egress,
            "gateway": gateway or {},
            "sandbox-manager": sandbox_manager or {},
            **(replicas or {}),
        },
        log_level=log_level,
    )
    stack.start(timeout=900)  # the first run on a machine builds the sandbox image (about a minute)
    return stack


#: The services whose log lines about a failed test's sessions are attached to its report.
DIAGNOSED = ("gateway", "session-store", "harness-1", "harness-2", "sandbox-manager")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """When an e2e test fails, attach what the services logged about the sessions its report names."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.when != "call" or not report.failed or not isinstance(stack, Stack):
        return
    sessions = sorted(set(re.findall(r"sesn_[0-9A-Za-z]+", report.longreprtext)))
    for service in DIAGNOSED if sessions else ():
        path = stack.log_path(service)
        if not path.exists():
            continue
        lines = [line for line in path.read_text(errors="replace").splitlines() if any(s in line for s in sessions)]
        if lines:
            report.sections.append((f"{service} log for {', '.join(sessions)}", "\n".join(lines[-200:])))


@pytest.fixture(scope="session")
def host_canary() -> Iterator[HostCanary]:
    """A server on this machine's every address answering with a canary (see ``tests.host_canary``)."""
    with serving_canary() as canary:
        yield canary


@pytest.fixture(scope="session")
def web_site() -> Iterator[Site]:
    """A web site and SearXNG-compatible search backend on ``WEB_SITE_ADDRESS`` (see ``tests.web_site``)."""
    with serving_site(WEB_SITE_ADDRESS) as site:
        yield site


@pytest.fixture(scope="session")
def mcp_server() -> Iterator[RunningMcpServer]:
    """A real MCP server on 127.0.0.1 (see ``tests.mcp_server``), admitted by the stack's credential-proxy."""
    with serving_mcp() as server:
        yield server


@pytest.fixture(scope="session")
def token_endpoint() -> Iterator[TokenServer]:
    """A real OAuth token endpoint on 127.0.0.1 (see ``tests.token_endpoint``), admitted by the stack's
    credential-proxy."""
    with serving_token_endpoint(prefix="corralcanary-e2e") as server:
        yield server


@pytest.fixture(scope="session")
def egress_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgressSites]:
    """The credentials-at-egress tests' servers (``EgressSites``), with their own test CA."""
    directory = tmp_path_factory.mktemp("egress-sites")
    authority = TestAuthority.create()
    with (
        serving_recorder(BOUND_ADDRESS, authority=authority, directory=directory) as bound,
        serving_recorder(UNBOUND_ADDRESS, authority=authority, directory=directory) as unbound,
        serving_recorder(ATTACKER_ADDRESS) as attacker,
    ):
        yield EgressSites(bound, unbound, attacker, authority.write(directory / "upstream-ca.pem"))


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    host_canary: HostCanary,
    web_site: Site,
    mcp_server: RunningMcpServer,
    token_endpoint: TokenServer,
    egress_sites: EgressSites,
) -> Iterator[Stack]:
    # two harnesses: tests.e2e.test_harness_crash and test_long_sessions hand sessions from one to the other
    stack = start_stack(
        tmp_path_factory.mktemp("corral"),
        host_canary,
        web_site,
        mcp_server,
        token_endpoint,
        egress_sites,
        harness_count=2,
    )
    try:
        assert_no_deprecated_settings(stack)
        yield stack
        assert_no_permission_violations(stack)
    finally:
        stack.stop()


#: Every service process of a test stack: each logs what NATS refused its own connection.
SERVICES = (*DIAGNOSED, "credential-proxy")


#: What ``corral.runner`` logs for a variable set under a name that was renamed.
DEPRECATED = "is deprecated and will stop working"


def assert_no_deprecated_settings(stack: Stack) -> None:
    """The launcher gives every service its settings under their current names: no service logs a
    deprecation warning for a renamed variable (``corral.settings.renamed``)."""
    warned = {
        service: [
            line for line in stack.log_path(service).read_text(errors="replace").splitlines() if DEPRECATED in line
        ]
        for service in SERVICES
        if stack.log_path(service).exists()
    }
    warned = {service: lines for service, lines in warned.items() if lines}
    assert not warned, f"services were given settings under deprecated names: {warned}"


def assert_no_permission_violations(stack: Stack) -> None:
    """No service was refused anything on the bus during the whole run: each service's NATS user
    allows everything the service does (tests' own deliberate violations use other connections)."""
    refused = {
        service: [line for line in stack.log_path(service).read_text(errors="replace").splitlines() if marker in line]
        for service in SERVICES
        for marker in ("permissions violation",)
        if stack.log_path(service).exists()
    }
    refused = {service: lines for service, lines in refused.items() if lines}
    assert not refused, f"NATS refused services something they do: {refused}"


@pytest.fixture(scope="session")
async def client(stack: Stack) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=stack.gateway_url, api_key=stack.api_key, max_retries=0, timeout=30
    ) as sdk:
        yield sdk


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"x-api-key": stack.api_key, "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=30) as c:
        yield c


@pytest.fixture
async def bus(stack: Stack) -> AsyncIterator[Bus]:
    async with Bus.connect(stack.nats_settings(), name="tests") as b:
        yield b


@pytest.fixture
async def model(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The embedded model's control API (install scripted scenarios, read recorded requests)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.embedded_model}", timeout=10) as c:
        yield c


@pytest.fixture
async def agent_env(client: anthropic.AsyncAnthropic) -> tuple[str, str]:
    """A fresh agent and environment (unique names) for a test."""
    agent = await client.beta.agents.create(name="e2e", model="claude-sonnet-4-6", system="Be brief.")
    env = await client.beta.environments.create(name=f"e2e-{agent.id.lower()}")
    return agent.id, env.id
