"""Egress with a credential-proxy on each of two machines: a session's egress goes through the
credential-proxy of its sandbox-manager's machine, and stopping the other machine's changes nothing.

The stack's credential-proxy is host ``egress-a`` (``CORRAL_CREDENTIAL_PROXY_HOST_ID``) and its
sandbox-manager is told so (``CORRAL_SANDBOX_EGRESS_HOST=egress-a``); the test starts a second
credential-proxy, ``egress-b``, with its own socket directory and metrics port, standing in for the
one on another machine (both serve the ``credential-proxy`` queue group, as two machines' would).
Each probe's sandbox fetches a local site through its egress proxy; which credential-proxy carried the
connection is read from each one's ``corral_credential_proxy_egress_connections_total`` and log.

Before hosts, the sandbox-manager asked the queue group, so about half of the opens (a session's
claim of a pooled sandbox, each pool refill) went to the other machine's credential-proxy, whose
socket that machine's engine could not mount.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from corral.bus import Bus, NoResponders
from corral.contracts.egress import EgressOps, TakeCredentialHostFailures, on_egress_host
from corral.devstack import processes
from corral.devstack.services import service_environment
from corral.devstack.stack import Stack
from tests.e2e.conftest import assert_no_permission_violations, start_stack
from tests.e2e.test_egress import probe
from tests.e2e.test_metrics import scrape
from tests.mcp_server import free_port
from tests.waiting import eventually
from tests.web_site import Site

pytestmark = pytest.mark.e2e

HOST_A, HOST_B = "egress-a", "egress-b"
CONNECTED = "corral_credential_proxy_egress_connections_total"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, web_site: Site) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("corral-egress-hosts"),
        web_site=web_site,
        credential_proxy={"CORRAL_CREDENTIAL_PROXY_HOST_ID": HOST_A},
        # the default scope: a pooled sandbox an earlier stack left on the shared engine mounts that
        # stack's credential-proxy's socket, and reconciliation removes it rather than adopt it
        sandbox_manager={"CORRAL_SANDBOX_EGRESS_HOST": HOST_A},
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


@contextlib.contextmanager
def proxy_b(stack: Stack, root: Path) -> Iterator[tuple[int, Path, Path]]:
    """The second credential-proxy (host ``egress-b``): its metrics port, pid file and log, killed at the end."""
    env = service_environment("credential-proxy", stack.service_context(), base=stack.environ, extra=stack.service_env)
    metrics_port = free_port()
    sockets = tempfile.mkdtemp(prefix="corral-b-")  # short: a unix socket's path has at most 107 bytes
    env.update(
        CORRAL_CREDENTIAL_PROXY_HOST_ID=HOST_B,
        CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR=sockets,
        CORRAL_CREDENTIAL_PROXY_EGRESS_STATE_DIR=str(root / "egress-state-b"),
        CORRAL_CREDENTIAL_PROXY_METRICS_PORT=str(metrics_port),
    )
    pid_path, log_path = root / "credential-proxy-b.pid", root / "credential-proxy-b.log"
    processes.spawn([sys.executable, "-m", "corral.credential_proxy"], env=env, log_path=log_path, pid_path=pid_path)
    try:
        yield metrics_port, pid_path, log_path
    finally:
        pid = processes.read_pid_file(pid_path)
        if pid is not None and processes.is_alive(pid):
            os.kill(pid, signal.SIGKILL)


async def serving(bus: Bus, host: str) -> bool:
    """Whether host ``host``'s credential-proxy answers on its own egress subjects."""
    try:
        await bus.call(
            on_egress_host(EgressOps.FAILURES, host), TakeCredentialHostFailures(session_id="sesn_probe"), timeout=5
        )
    except NoResponders:
        return False
    return True


async def connections(url: str) -> float:
    """Egress connections the credential-proxy at ``url`` carried (any outcome)."""
    _, samples = await scrape(url)
    return sum(value for (name, _), value in samples.items() if name == CONNECTED)


async def test_a_sessions_egress_goes_through_its_hosts_credential_proxy_and_never_the_others(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, bus: Bus, web_site: Site, tmp_path: Path
) -> None:
    page = web_site.url("/page.html")
    url_a = stack.metrics_urls()["credential-proxy"]
    with proxy_b(stack, tmp_path) as (metrics_b, pid_b, log_b):
        await eventually(lambda: serving(bus, HOST_B), timeout=60, every=0.2)
        url_b = f"http://127.0.0.1:{metrics_b}/metrics"
        before_a, before_b = await connections(url_a), await connections(url_b)

        for _ in range(2):  # each probe claims a pooled sandbox and refills the pool: several opens
            seen = await probe(client, model, None, page)
            status, body = seen["fetched"][page]
            assert status == 200 and web_site.canary in body, seen["fetched"][page]

        assert await connections(url_a) >= before_a + 2, "host egress-a's credential-proxy carried each fetch"
        assert await connections(url_b) == before_b == 0, "the other host's credential-proxy carried nothing"
        assert "egress opened" not in log_b.read_text(errors="replace"), "nothing was opened on the other host"

        # the other machine's credential-proxy stops: this host's sessions go on as before
        pid = processes.read_pid_file(pid_b)
        assert pid is not None
        os.kill(pid, signal.SIGTERM)

        async def stopped() -> bool:
            return not processes.is_alive(pid)

        await eventually(stopped, timeout=30, every=0.1)
        assert not await serving(bus, HOST_B)
        after = await probe(client, model, None, page)
        assert after["fetched"][page][0] == 200, after["fetched"][page]
