"""Two of every service on one stack (``CORRAL_GATEWAY_COUNT``, ``CORRAL_SESSION_STORE_COUNT``,
``CORRAL_CREDENTIAL_PROXY_COUNT``, ``CORRAL_SANDBOX_HOSTS`` = 2, three harnesses): any gateway serves
any request and any stream, tool turns run on both sandbox hosts with nothing lost or duplicated, two
session-stores racing on one session never both append, and harnesses killed every 10 s under many
sessions cost no turn and no side effect twice.

The harness-kill soak runs reduced here (``SOAK_SESSIONS`` sessions, a kill every 10 s for
``SOAK_SECONDS``); the acceptance run is ``CORRAL_HARNESS_SOAK=full`` (200 sessions, two minutes):

    CORRAL_HARNESS_SOAK=full uv run pytest tests/faults/test_replicas.py -k harness -q --timeout=2400
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anthropic
import docker
import httpx
import pytest

from corral.bus import Bus
from corral.contracts import headers as h
from corral.contracts import subjects
from corral.contracts.rpc import AppendEvents, Op, RpcReply
from corral.devstack.stack import Stack
from tests.e2e.conftest import start_stack
from tests.faults.checker import check
from tests.faults.conftest import STORE_TIMEOUT_S, TWO_OF_EACH
from tests.faults.harness_kills import soak
from tests.faults.history import History
from tests.faults.observe import observe
from tests.faults.scenario import PROGRESS_S, WARM_UP_S, progress, quiesce
from tests.faults.workload import Workload
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

FULL = os.environ.get("CORRAL_HARNESS_SOAK") == "full"
SOAK_SESSIONS = 200 if FULL else 10
SOAK_SECONDS = 120.0 if FULL else 30.0
KILL_EVERY_S = 10.0
#: Rounds of two appends racing through the two session-stores.
RACES = 15
#: The records after which a session's log stays as it is until a client writes again.
QUIET_AFTER = ("corral.session_created", "session.status_idle")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    gateway = {"CORRAL_GATEWAY_STORE_TIMEOUT_S": str(STORE_TIMEOUT_S)}
    stack = start_stack(tmp_path_factory.mktemp("replicas"), gateway=gateway, environ=TWO_OF_EACH)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def gateways(replicas: Stack) -> AsyncIterator[list[anthropic.AsyncAnthropic]]:
    one, two = replicas.gateway_urls
    async with (
        anthropic.AsyncAnthropic(base_url=one, api_key=replicas.api_key, max_retries=3, timeout=30) as first,
        anthropic.AsyncAnthropic(base_url=two, api_key=replicas.api_key, max_retries=3, timeout=30) as second,
    ):
        yield [first, second]


async def test_a_stream_on_one_gateway_sees_what_was_sent_through_the_other(
    gateways: list[anthropic.AsyncAnthropic],
) -> None:
    one, two = gateways
    agent = await one.beta.agents.create(name="replicas", model="claude-sonnet-4-6")
    env = await two.beta.environments.create(name="replicas-stream")
    session = await one.beta.sessions.create(agent=agent.id, environment_id=env.id)
    assert (await two.beta.sessions.retrieve(session.id)).id == session.id  # made on 1, read on 2
    seen: list[str] = []
    async with asyncio.timeout(60), await two.beta.sessions.events.stream(session.id) as stream:
        sent = await one.beta.sessions.events.send(
            session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "hello"}]}]
        )
        async for event in stream:
            seen.append(event.id)
            if event.type == "session.status_idle":
                break
    assert sent.data[0].id in seen, "the stream on gateway 2 carried the message gateway 1 took"


async def test_tool_turns_through_both_gateways_on_both_sandbox_hosts_lose_and_repeat_nothing(
    replicas: Stack, tmp_path: Path
) -> None:
    history = History()
    async with Workload.open(replicas, history, clients=6) as work:
        assert len(work.sdks) == 2
        async with asyncio.TaskGroup() as group:
            clients = group.create_task(work.run())
            await progress(work, clients, 2 * len(work.sessions), WARM_UP_S + PROGRESS_S)
            work.stop()
        await quiesce(replicas, work.all_sessions())
        verdict = check(history, await observe(replicas, work.all_sessions()))
    if not verdict.ok:
        history.dump(tmp_path / "history.jsonl")
    assert verdict.ok, verdict.summary()
    assert verdict.counts["turns_ended"] >= 12 and verdict.counts["tool_runs"] >= 12, verdict.summary()
    hosts = [replicas.docker_host, *(engine.host for engine in replicas.host_engines())]
    assert all(_sandboxes(host) for host in hosts), "both sandbox hosts ran sandboxes of these sessions"


def _sandboxes(host: str | None) -> int:
    client = docker.DockerClient(base_url=host)
    try:
        return len(client.containers.list(filters={"label": "corral.managed=true"}))
    finally:
        client.close()


async def test_two_session_stores_racing_on_one_session_never_both_append(
    replicas: Stack, gateways: list[anthropic.AsyncAnthropic]
) -> None:
    one, _ = gateways
    agent = await one.beta.agents.create(name="replicas-fence", model="claude-sonnet-4-6")
    env = await one.beta.environments.create(name="replicas-fence")
    session = await one.beta.sessions.create(agent=agent.id, environment_id=env.id)
    before = await _appends(replicas)
    async with Bus.connect(replicas.nats_settings(), name="tests-fence") as bus:

        async def append(text: str, last: int) -> RpcReply:
            request = AppendEvents(
                workspace_id=None,
                session_id=session.id,
                events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}],
                expected_last_seq=last,
            )
            raw = await bus.request(subjects.store_rpc(Op.EVENTS_APPEND), request.model_dump_json().encode())
            return RpcReply.model_validate_json(raw)

        async def quiet() -> bool:
            """The session's last turn has ended: nothing appends to it until the next message."""
            last = await bus.last_seq(subjects.SESSIONS_STREAM, subjects.session_log(session.id))
            return (await bus.get(subjects.SESSIONS_STREAM, last)).headers.get(h.RECORD_TYPE) in QUIET_AFTER

        for round_ in range(RACES):  # each round: two appends expecting the same last sequence, at once
            await eventually(quiet, timeout=60)  # the harness answering the last round appends no more
            last = await bus.last_seq(subjects.SESSIONS_STREAM, subjects.session_log(session.id))
            replies = await asyncio.gather(append(f"a{round_}", last), append(f"b{round_}", last))
            assert sorted(r.ok for r in replies) == [False, True], f"round {round_}: {replies}"
            [loser] = [r for r in replies if not r.ok]
            assert loser.error is not None and loser.error.type == "conflict_error"
    after = await _appends(replicas)
    texts = [e.content[0].text async for e in one.beta.sessions.events.list(session.id, types=["user.message"])]
    assert len(texts) == RACES == len({t[1:] for t in texts})  # one of each round, none twice
    for store in ("session-store", "session-store-2"):  # both stores took part: each won and lost races
        won, lost = (after[store][k] - before[store][k] for k in ("ok", "refused"))
        assert won > 0 and lost > 0, f"{store}: {won} appends won, {lost} refused"


_APPENDS = re.compile(r"^corral_session_store_appends_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$", re.M)


async def _appends(stack: Stack) -> dict[str, dict[str, float]]:
    """Each session-store's appends to the session log by outcome, from its metrics endpoint."""
    counts: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for name, url in stack.metrics_urls().items():
            if not name.startswith("session-store"):
                continue
            text = (await http.get(url)).text
            by_outcome = {"ok": 0.0, "refused": 0.0}
            for match in _APPENDS.finditer(text):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
                if labels.get("stream") == "sessions" and labels.get("outcome") in by_outcome:
                    by_outcome[labels["outcome"]] += float(match["value"])
            counts[name] = by_outcome
    return counts


@pytest.mark.timeout(SOAK_SECONDS + SOAK_SESSIONS * 6 + 900)
async def test_harnesses_killed_every_10_s_under_many_sessions_cost_no_turn_and_no_effect_twice(
    replicas: Stack, tmp_path: Path, report: list[str]
) -> None:
    result = await soak(
        replicas, sessions=SOAK_SESSIONS, seconds=SOAK_SECONDS, every=KILL_EVERY_S, dump_to=tmp_path / "h.jsonl"
    )
    report.append(f"harness soak, {SOAK_SESSIONS} sessions: {result.report()}")
    assert result.verdict.ok, result.report()
    assert result.given_up == 0, result.report()  # every turn completed within its client's deadline
    assert len(result.kills) == int(SOAK_SECONDS // KILL_EVERY_S), result.report()
    # a kill every 10 s, not one whenever the test process gets round to it: none a period late
    assert result.latest < KILL_EVERY_S, result.report()
    assert result.verdict.counts["turns_ended"] >= 2 * SOAK_SESSIONS, result.report()
