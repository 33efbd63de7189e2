"""An operator's own program on the bus: ``examples/bus_subscriber`` follows a session's log as the
read-only ``subscriber`` NATS user that the launcher creates, through a durable consumer of its own,
and writes every record exactly once and in order across crashes and restarts (a crash between
writing and acknowledging, a SIGKILL mid-turn); records stored in parts come out whole, also when
it resumes between their parts. The ``subscriber`` user is in a NATS account of its own and reads
mirrors of the streams there: NATS refuses it publishing to Corral's subjects, deleting, purging or
changing a stream, the key-value and object stores, and every subject that leads into Corral's
account; the consumers it makes are in its account, never on Corral's streams; and a deleted
session's history leaves the mirror as it leaves the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from corral.bus import Bus, records
from corral.contracts import subjects, subscribers
from corral.devstack.nats_users import ADMIN, SUBSCRIBER
from corral.devstack.stack import Stack
from tests.e2e.flows import open_stream, read_until_idle, send_text, unique
from tests.e2e.test_least_privilege import connected, refused_publish, refused_subscription
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bus_subscriber" / "subscriber.py"

#: A user message this long is stored in two parts (the chunk size is ``max_payload`` less 64 KiB).
BIG = 1024 * 1024 + 300_000


def subscriber_env(stack: Stack) -> dict[str, str]:
    """What ``make up`` tells an operator to source: the read-only user's connection (0600)."""
    path = stack.state.subscriber_env_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if line)
    assert values["NATS_USER"] == SUBSCRIBER and values["NATS_URL"] == stack.nats_url
    return {"PATH": os.environ.get("PATH", ""), **values}


class Subscriber:
    """The example, run as a subprocess with the read-only credentials, one consumer, one output file."""

    def __init__(self, stack: Stack, tmp_path: Path, session_id: str) -> None:
        self.env = subscriber_env(stack)
        self.consumer = unique("subscriber-test")
        self.session_id = session_id
        self.out = tmp_path / "events.jsonl"
        self.logs: list[Path] = []
        self.tmp_path = tmp_path

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"run-{len(self.logs) + 1}.log"
        self.logs.append(log)
        argv = [sys.executable, str(EXAMPLE), "--consumer", self.consumer, "--streams", "sessions"]
        argv += ["--session", self.session_id, "--ack-wait", "2", "--out", str(self.out), *extra]
        with log.open("wb") as handle:
            return subprocess.Popen(argv, env=self.env, stdout=handle, stderr=subprocess.STDOUT)

    def written(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    def log(self, run: int) -> str:
        return self.logs[run - 1].read_text(errors="replace")


async def exited(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    async with asyncio.timeout(timeout):
        return await asyncio.to_thread(process.wait)


async def the_log(bus: Bus, session_id: str) -> list[tuple[int, str, str | None]]:
    """Every record of the session's log (read whole by ``corral.bus``): stream sequence, type, id."""
    log = [m async for m in bus.read(subjects.SESSIONS_STREAM, subjects.session_log(session_id))]
    return [(m.seq, json.loads(m.data)["type"], json.loads(m.data).get("id")) for m in log]


def seen(entries: list[dict[str, Any]]) -> list[tuple[int, str, str | None]]:
    return [(e["seq"], e["type"], e["id"]) for e in entries]


async def messages_through_the_last_part_of(bus: Bus, session_id: str, record_id: str) -> int:
    """How many messages the session's subject holds up to and including the last part of ``record_id``."""
    count = 0
    async for m in bus.read(subjects.SESSIONS_STREAM, subjects.session_log(session_id)):
        count += 1 if m.first_seq is None else len(records.split(m.data, bus.chunk_size))
        if json.loads(m.data).get("id") == record_id:
            assert m.first_seq is not None, "the large message was stored as one message"
            return count
    raise AssertionError(f"{record_id} is not in the log")


async def test_the_example_subscriber_gets_every_record_of_a_session_exactly_once_across_restarts(
    stack: Stack, client: anthropic.AsyncAnthropic, bus: Bus, agent_env: tuple[str, str], tmp_path: Path
) -> None:
    agent_id, env_id = agent_env
    session_id = (await client.beta.sessions.create(agent=agent_id, environment_id=env_id)).id
    subscriber = Subscriber(stack, tmp_path, session_id)

    # turn 1, with a user message stored in two parts
    stream = await open_stream(client, session_id)
    async with stream:
        big = await send_text(client, session_id, "b" * BIG)
        await read_until_idle(stream, timeout=60)
    turn_1 = await the_log(bus, session_id)
    last_part = await messages_through_the_last_part_of(bus, session_id, big.id)

    # run 1 crashes after writing the large record, before acknowledging its last part
    first = subscriber.start("--exit-after", str(last_part))
    assert await exited(first) == 3, subscriber.log(1)
    assert seen(subscriber.written())[-1][2] == big.id
    assert "created consumer" in subscriber.log(1)

    # run 2 is handed that last part again: it joins it to the first part (acknowledged by run 1),
    # finds the record already written, skips it and goes on
    async def caught_up() -> bool:
        """As many records written as the log holds (then they must be the same, once each)."""
        return len(subscriber.written()) >= len(await the_log(bus, session_id))

    async def into_turn_2() -> bool:
        return len(subscriber.written()) > len(turn_1)

    second = subscriber.start()
    try:
        await eventually(caught_up, timeout=60)
        assert seen(subscriber.written()) == await the_log(bus, session_id)
        assert "already written; skipped" in subscriber.log(2), subscriber.log(2)

        # turn 2: run 2 is killed mid-turn, as soon as it wrote one of the turn's records
        stream = await open_stream(client, session_id)
        async with stream:
            await send_text(client, session_id, "second turn")
            await eventually(into_turn_2, timeout=60)
            second.send_signal(signal.SIGKILL)
            await read_until_idle(stream, timeout=60)
        assert await exited(second) == -signal.SIGKILL
    finally:
        if second.poll() is None:
            second.kill()
    assert len(subscriber.written()) < len(await the_log(bus, session_id)), "nothing was left for run 3"

    # run 3 resumes where run 2 stopped
    third = subscriber.start()
    try:
        await eventually(caught_up, timeout=60)
        assert "resuming consumer" in subscriber.log(3)
    finally:
        third.send_signal(signal.SIGTERM)
        assert await exited(third, timeout=20) == 0, subscriber.log(3)

    written = subscriber.written()
    full = await the_log(bus, session_id)
    assert seen(written) == full  # every record, once, in order
    assert full[0][1] == "corral.session_created" and full[-1][1] == "session.status_idle"
    assert [t for _, t, _ in full].count("user.message") == 2
    by_id = {e["id"]: e for e in written}
    assert by_id[big.id]["record"]["content"][0]["text"] == "b" * BIG  # whole, from its two parts
    assert {e["session_id"] for e in written} == {session_id}


@contextlib.asynccontextmanager
async def raw(stack: Stack, user: str) -> AsyncIterator[JetStreamContext]:
    """A plain nats-py JetStream context as ``user`` (what an operator's program has)."""
    settings = stack.nats_settings(user)
    password = settings.password.get_secret_value() if settings.password else None
    nc = await nats.connect(stack.nats_url, user=user, password=password, inbox_prefix=f"_INBOX.{user}")
    try:
        yield nc.jetstream(timeout=10)
    finally:
        await nc.close()


async def consumer_names(js: JetStreamContext, stream: str) -> set[str]:
    return {c.name for c in await js.consumers_info(stream) if c.name}


async def test_the_subscriber_user_lives_in_an_account_of_its_own_and_may_only_read(stack: Stack, bus: Bus) -> None:
    session_log = subjects.session_log("sesn_subscriber_refused")
    sessions, catalog = subjects.SESSIONS_STREAM, subjects.CATALOG_STREAM
    releases = subjects.SANDBOX_RELEASES_SPEC
    async with connected(stack, SUBSCRIBER) as reader:
        # no writing to a log, the catalog, the wake queue or an RPC subject
        for subject in (
            session_log,
            subjects.api_key_log("key_subscriber_refused"),
            subjects.wake("sesn_subscriber_refused"),
            subjects.store_rpc("events.append"),
            subjects.deltas("sesn_subscriber_refused"),
        ):
            assert await refused_publish(reader, subject), subject
        # no deleting, purging or changing a stream (not even its own account's mirrors), no message deletes
        for stream in (sessions, catalog, subjects.WAKE_STREAM):
            for op in ("DELETE", "PURGE", "MSG.DELETE", "UPDATE", "CREATE"):
                assert await refused_publish(reader, f"$JS.API.STREAM.{op}.{stream}"), (op, stream)
        # nothing that leads into Corral's account: the mirrors' consumer creation and flow control
        for stream in (sessions, catalog):
            assert await refused_publish(reader, f"{subscribers.ORIGIN_API}.CONSUMER.CREATE.{stream}"), stream
            assert await refused_publish(reader, f"$JS.FC.{stream}.x.1.1"), stream
        # no key-value bucket, object store or other stream
        leases = f"KV_{subjects.LEASE_BUCKET}"
        for subject in (
            f"$JS.API.STREAM.INFO.{leases}",
            f"$JS.API.DIRECT.GET.{leases}.$KV.{subjects.LEASE_BUCKET}.sesn_subscriber_refused",
            f"$JS.API.STREAM.MSG.GET.{leases}",
            f"$JS.API.CONSUMER.CREATE.{leases}.peek",
            f"$KV.{subjects.LEASE_BUCKET}.sesn_subscriber_refused",
            f"$JS.API.STREAM.INFO.OBJ_{subjects.BODIES_BUCKET}",
            f"$JS.API.CONSUMER.CREATE.{subjects.WAKE_STREAM}.peek.{subjects.WAKE_WILDCARD}",
            f"{subscribers.MIRRORS_API}.STREAM.INFO.{sessions}",
        ):
            assert await refused_publish(reader, subject), subject
        # nobody else's replies, no live subjects
        assert await refused_subscription(reader, subjects.SESSIONS_WILDCARD)
        assert await refused_subscription(reader, "_INBOX.gateway.>")
        assert await refused_subscription(reader, ">")
    assert await bus.last_seq(sessions, session_log) == 0
    for stream in (sessions, catalog, subjects.WAKE_STREAM):
        assert (await bus.stream_spec(stream)).name == stream

    # what it is for works, in its own account: a consumer it makes (even one named like a
    # service's) is on the mirror, and Corral's stream never sees it; it may delete its own
    mine = unique("mine")
    async with raw(stack, ADMIN) as corral, raw(stack, SUBSCRIBER) as subscriber:
        before = await consumer_names(corral, sessions)
        assert releases.name in before
        for name in (mine, releases.name):
            config = ConsumerConfig(
                name=name, durable_name=name, filter_subject=subjects.SESSIONS_WILDCARD, ack_policy=AckPolicy.EXPLICIT
            )
            await subscriber.add_consumer(sessions, config)
            # nothing of the subscriber's in Corral's account (whose services' log reads come and go meanwhile)
            assert mine not in await consumer_names(corral, sessions)
        info = await subscriber.stream_info(sessions)
        assert info.config.mirror is not None and info.config.mirror.name == sessions
        assert {mine, releases.name} <= await consumer_names(subscriber, sessions)
        assert await subscriber.delete_consumer(sessions, releases.name)
        assert releases.name in await consumer_names(corral, sessions)  # the sandbox-manager's, untouched
        await subscriber.delete_consumer(sessions, mine)


async def test_a_deleted_sessions_history_leaves_the_subscribers_mirror_too(
    stack: Stack, client: anthropic.AsyncAnthropic, bus: Bus, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    session_id = (await client.beta.sessions.create(agent=agent_id, environment_id=env_id)).id
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, "soon gone")
        await read_until_idle(stream, timeout=60)
    subject = subjects.session_log(session_id)
    last = await bus.last_seq(subjects.SESSIONS_STREAM, subject)
    async with raw(stack, SUBSCRIBER) as subscriber:

        async def mirrored() -> bool:
            return (await subscriber.stream_info(subjects.SESSIONS_STREAM)).state.last_seq >= last

        await eventually(mirrored, timeout=30)
        first = await subscriber.get_msg(subjects.SESSIONS_STREAM, seq=1, subject=subject, next=True)
        assert json.loads(first.data or b"{}")["type"] == "corral.session_created"

        await client.beta.sessions.delete(session_id)

        # what the API promises for delete holds for the mirror too: only the tombstone is left
        first = await subscriber.get_msg(subjects.SESSIONS_STREAM, seq=1, subject=subject, next=True)
        assert json.loads(first.data or b"{}")["type"] == "corral.session_deleted"
        assert first.seq == await bus.last_seq(subjects.SESSIONS_STREAM, subject)
