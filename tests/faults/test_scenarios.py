"""The fault scenarios on the real stack: while three clients run scripted tool turns through the
gateway with the official SDK, one component is paused (SIGSTOP for longer than a harness lease,
then SIGCONT) and then killed (SIGKILL, then started again); afterwards every session must finish its
turns and the checker must find no violation. Each prints its recovery time: from the fault to the
first append that succeeds, and to the first turn begun after it that ends.

Reliability plan: a killed or paused harness is F1-F3 and F6, the gateway F13, the sandbox-manager
F22, the credential-proxy F18, Postgres F9; the seeded soak is F23 (``CORRAL_SOAK_SECONDS``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from pathlib import Path

import pytest

from corral.devstack.stack import Stack
from tests.faults.checker import check
from tests.faults.history import History
from tests.faults.nemesis import Fault
from tests.faults.observe import observe
from tests.faults.scenario import CLIENTS, Outcome, once, run, seeded
from tests.faults.workload import Workload
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

#: The soak's length: brief in CI; set ``CORRAL_SOAK_SECONDS`` (e.g. 21600) for hours.
SOAK_SECONDS = float(os.environ.get("CORRAL_SOAK_SECONDS", "30"))


def verify(outcome: Outcome, report: list[str]) -> None:
    report.append(outcome.report())
    assert outcome.verdict.ok, outcome.report()
    # every session finished a turn before the faults and another after them
    assert outcome.verdict.counts["turns_ended"] >= 2 * CLIENTS, outcome.report()


#: The services whose pause and kill also run here, where the stack has one of each: the gateway (every
#: client is cut off until it is back: no other to fail over to) and the session-store (no append
#: anywhere until it is back). Every service's replica is paused and killed on the cluster with two of
#: each (``test_nats_scenarios.py``); a lease-holding harness or a session's sandbox-manager is one
#: process there as here, and the seeded soak below draws every service's faults on this stack.
ONLY_REPLICA = ("gateway", "session-store")


@pytest.mark.parametrize("service", ONLY_REPLICA)
async def test_a_service_paused_then_killed_mid_turn_loses_duplicates_and_strands_nothing(
    fault_stack: Stack, service: str, tmp_path: Path, report: list[str]
) -> None:
    """Both faults of a service in one run (the stack makes progress between them), which keeps the
    suite's time down: a warm-up and a check per service rather than per fault."""
    schedule = once(Fault("pause", service), Fault("kill", service))
    verify(await run(fault_stack, schedule, dump_to=tmp_path / "history.jsonl"), report)


async def test_f9_postgres_killed_mid_turn_and_restarted_loses_nothing_and_the_projection_catches_up(
    fault_stack: Stack, tmp_path: Path, report: list[str]
) -> None:
    verify(await run(fault_stack, once(Fault("kill", "postgres")), dump_to=tmp_path / "history.jsonl"), report)


@pytest.mark.timeout(SOAK_SECONDS + 900)
async def test_f23_seeded_soak_of_random_faults_breaks_no_invariant(
    fault_stack: Stack, tmp_path: Path, report: list[str]
) -> None:
    """Faults drawn at random from every single-node fault, one after another (each once the stack
    has made progress since the last), for ``CORRAL_SOAK_SECONDS``; ``CORRAL_SOAK_SEED`` replays a run."""
    seed = int(os.environ.get("CORRAL_SOAK_SEED") or secrets.randbelow(2**32))
    report.append(f"soak: seed {seed} (CORRAL_SOAK_SEED={seed} replays it), {SOAK_SECONDS:g} s")
    verify(await run(fault_stack, seeded(seed, SOAK_SECONDS), dump_to=tmp_path / "history.jsonl"), report)


async def test_a_send_the_store_applied_after_the_gateway_gave_up_is_stored_once_when_retried(
    fault_stack: Stack, tmp_path: Path, report: list[str]
) -> None:
    """The session-store is paused while a client sends: the gateway gives up on the request after
    ``CORRAL_GATEWAY_STORE_TIMEOUT_S`` (a 503, so the client retries with the same
    ``Idempotency-Key``, and the gateway releases the key), and the retries pile up in the store's
    queue; resumed, the store handles every one of them. The message must be stored once (before the
    fix: once per attempt, each a turn of its own)."""
    history = History()
    async with Workload.open(fault_stack, history, clients=1) as work:
        [(session, token)] = work.sessions.items()
        stopped = await asyncio.to_thread(fault_stack.kill, "session-store", signal.SIGSTOP)
        try:
            sending = asyncio.create_task(work.send("client-0", session, f"{token}: turn 0"))

            async def retried() -> bool:  # the gateway answered 503 twice: two attempts queued
                return sum(op.kind == "unknown" for op in history.completions("send")) >= 2

            await eventually(retried, timeout=60)
        finally:
            os.kill(stopped, signal.SIGCONT)
        event_id = await sending
        assert event_id is not None and await work.await_turn("client-0", session, event_id)
        verdict = check(history, await observe(fault_stack, work.all_sessions()))
    report.append(f"store paused under a send: {verdict.summary()}")
    assert verdict.ok, verdict.summary()
    assert verdict.counts["sends_unknown"] >= 2 and verdict.counts["turns"] == 1, verdict.summary()
