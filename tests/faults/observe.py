"""What the stack holds after a run, read from its sources for the checker (``checker.Observation``):
each session's log from the stream (never through the gateway), its Postgres projection beside the
fold of the log, its lease holder, and the lines the scripted tool calls appended in the sandboxes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

import asyncpg
import docker
import docker.errors

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.log import parse_session_record
from corral.devstack.stack import Stack
from corral.session_store.domain.sessions import SessionRow
from tests.e2e.flows import LEASE_TTL_S
from tests.faults.checker import LogEvent, Observation, Row

#: The file every scripted tool call appends its marker to.
RUNS_FILE = "/workspace/runs.txt"
#: The sandbox-manager's ``CORRAL_SANDBOX_RECORD_TTL_S`` (its default): binding its bucket names it.
RECORD_TTL_S = 30 * 86400.0


async def observe(stack: Stack, sessions: Iterable[str], *, sandboxes: bool = True) -> Observation:
    """``sandboxes=False``: without reading the sandboxes' files (a quicker look)."""
    wanted = sorted(set(sessions))
    log: dict[str, list[LogEvent]] = {}
    folded: dict[str, Row] = {}
    leases: dict[str, str | None] = {}
    containers: list[str] = []
    async with Bus.connect(stack.nats_settings(), name="fault-checker") as bus:
        bucket = await bus.bind_key_value(subjects.lease_spec(float(LEASE_TTL_S)))
        assert bucket is not None, "the session-store makes the lease bucket before it is ready"
        records = await bus.bind_key_value(subjects.sandboxes_spec(RECORD_TTL_S))
        for session in wanted:
            row = SessionRow(session_id=session)
            events: list[LogEvent] = []
            async for msg in bus.read(subjects.SESSIONS_STREAM, subjects.session_log(session)):
                record = parse_session_record(msg.data)
                row.apply(record, msg.seq)
                if not record.type.startswith("corral."):
                    body = record.model_dump(mode="json")
                    events.append(LogEvent(msg.seq, str(body.get("id", "")), record.type, body))
            log[session] = events
            if not row.deleted and row.created_at is not None:
                folded[session] = _row(row, events)
            # From the leaders: a replica still catching up after its fault may answer with a value
            # from before it, a sandbox since replaced say, whose lines are gone with it.
            entry = await bucket.get(session, leader=True)
            leases[session] = str(json.loads(entry.value)["holder"]) if entry is not None else None
            kept = await records.get(f"session.{session}", leader=True) if records is not None and sandboxes else None
            if kept is not None and json.loads(kept.value).get("container_id"):
                containers.append(json.loads(kept.value)["container_id"])
    return Observation(
        log=log,
        projected=await _projected(stack, wanted),
        folded=folded,
        leases=leases,
        sandbox_lines=await asyncio.to_thread(sandbox_lines, stack, containers),
    )


def _row(row: SessionRow, events: list[LogEvent]) -> Row:
    return Row(
        status=row.status,
        last_seq=row.last_seq,
        usage=(row.input_tokens, row.output_tokens),
        body=row.body,
        events=tuple((e.seq, e.id) for e in events),
    )


async def _projected(stack: Stack, sessions: list[str]) -> dict[str, Row]:
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch("SELECT * FROM sessions WHERE session_id = ANY($1::text[])", sessions)
        indexed = await conn.fetch(
            "SELECT session_id, seq, event_id FROM events WHERE session_id = ANY($1::text[]) ORDER BY session_id, seq",
            sessions,
        )
    finally:
        await conn.close()
    events: dict[str, list[tuple[int, str]]] = {}
    for r in indexed:
        events.setdefault(r["session_id"], []).append((r["seq"], r["event_id"]))
    return {
        r["session_id"]: Row(
            status=r["status"],
            last_seq=r["last_seq"],
            usage=(r["input_tokens"], r["output_tokens"]),
            body=json.loads(r["body"]),
            events=tuple(events.get(r["session_id"], [])),
        )
        for r in rows
    }


def sandbox_lines(stack: Stack, containers: list[str]) -> list[str]:
    """Every line of ``RUNS_FILE`` in these sandboxes (the sandbox-manager's records name them), on
    whichever sandbox host's engine runs each."""
    clients = [docker.DockerClient(base_url=h) for h in (stack.docker_host, *(e.host for e in stack.host_engines()))]
    lines: list[str] = []
    try:
        for container_id in containers:
            for client in clients:
                try:
                    result = client.containers.get(container_id).exec_run(["cat", RUNS_FILE])
                except docker.errors.APIError:  # NotFound included: not on this host, or gone with its lines
                    continue
                if result.exit_code == 0:
                    output = result.output if isinstance(result.output, bytes) else b"".join(result.output)
                    lines += output.decode(errors="replace").splitlines()
                break
        return lines
    finally:
        for client in clients:
            client.close()
