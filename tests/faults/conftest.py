"""The fault suite's own stack (one for the whole suite): scenarios kill and pause its processes, so
no other test shares it. Started only when a scenario asks for it (the checker's unit tests do not)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from corral.devstack.stack import Stack
from tests.e2e.conftest import start_stack

#: The gateway's deadline for session-store requests: shorter than a pause (``nemesis.PAUSE_S``), so a
#: paused store makes the gateway give up on requests the store handles once it resumes.
STORE_TIMEOUT_S = 3
#: Two of every service (``test_replicas.py``, and the NATS cluster's stack in ``test_nats_scenarios.py``):
#: two gateways, two session-stores, two credential-proxies, two sandbox hosts, three harnesses.
TWO_OF_EACH = {
    "CORRAL_GATEWAY_COUNT": "2",
    "CORRAL_SESSION_STORE_COUNT": "2",
    "CORRAL_CREDENTIAL_PROXY_COUNT": "2",
    "CORRAL_SANDBOX_HOSTS": "2",
    "CORRAL_HARNESS_COUNT": "3",
}


@pytest.fixture(scope="session")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    gateway = {"CORRAL_GATEWAY_STORE_TIMEOUT_S": str(STORE_TIMEOUT_S)}
    stack = start_stack(tmp_path_factory.mktemp("faults"), gateway=gateway)
    try:
        yield stack
    finally:
        stack.stop()


#: What each scenario reported (recovery times, the checker's counts), printed after the run.
REPORTS: list[tuple[str, str]] = []


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Lines a scenario reports: shown in the terminal summary of every run, passed or failed."""
    lines: list[str] = []
    yield lines
    if lines:
        REPORTS.append((request.node.name, "\n".join(lines)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.section("fault suite: recovery and the checker's verdicts")
        for name, text in REPORTS:
            terminalreporter.write_line(f"{name}\n  {text.replace(chr(10), chr(10) + '  ')}")
