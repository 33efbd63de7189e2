"""The Postgres projection against real NATS JetStream and a real Postgres: any text the log can hold
is projected and read back unchanged, and a record the projection cannot hold is recorded as a
projection error and skipped for its own row only, never stopping the projector."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.bus import Bus, OutgoingRecord
from corral.contracts import ids, subjects
from corral.contracts.log import parse_catalog_record, parse_session_record
from corral.session_store import db, pgtext
from corral.session_store.domain.sessions import SessionRow
from corral.session_store.projector import Projector
from corral.settings import NatsSettings

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[3] / "proto" / "fixtures"
ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None), max_size=40)
#: Strings that have stopped projections before: NUL, lone surrogates, and long ones.
HARD_TEXT = ANY_TEXT | st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfffy", "\\u0000", "é" * 100_000])


def fixture(kind: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / kind / name / "v1" / "basic.json").read_text())
    return data


@contextlib.asynccontextmanager
async def projecting(infra: tuple[str, str]) -> AsyncIterator[tuple[Bus, asyncpg.Pool, Projector]]:
    """A bus, a migrated pool and a running projector, as a session-store has them."""
    nats_url, dsn = infra
    async with Bus.connect(NatsSettings(url=nats_url), name="projector-tests") as bus, db.open_pool(dsn) as pool:
        for spec in (subjects.SESSIONS_SPEC, subjects.CATALOG_SPEC):
            await bus.ensure_stream(spec)
        await db.migrate(pool)
        projector = Projector(bus, pool)
        task = asyncio.create_task(projector.run())
        try:
            yield bus, pool, projector
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def publish(bus: Bus, subject: str, record: dict[str, Any] | bytes) -> int:
    data = record if isinstance(record, bytes) else json.dumps(record).encode()
    return (await bus.publish(subject, data)).seq


def session_records(session_id: str, texts: list[str]) -> list[dict[str, Any]]:
    """A session whose agent name, title and messages hold ``texts``."""
    created = fixture("session", "corral.session_created")
    created["session"].update(id=session_id, title=texts[0] if texts else None)
    created["session"]["agent"]["name"] = texts[-1] if texts else "a"
    records = [created]
    for text in texts:
        message = copy.deepcopy(fixture("session", "user.message"))
        message.update(id=ids.new_id(ids.EVENT), content=[{"type": "text", "text": text}])
        records.append(message)
        reply = copy.deepcopy(fixture("session", "agent.message"))
        reply.update(id=ids.new_id(ids.EVENT), content=[{"type": "text", "text": text[::-1]}])
        records.append(reply)
    return records


def loads_as_record(record: dict[str, Any], parse: Any = parse_session_record) -> bool:
    try:
        parse(json.dumps(record).encode())
    except ValueError:
        return False
    return True


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(HARD_TEXT, min_size=1, max_size=6), env_name=HARD_TEXT.filter(bool))
def test_any_text_in_the_log_is_projected_and_read_back_unchanged(
    infra: tuple[str, str], texts: list[str], env_name: str
) -> None:
    async def scenario() -> None:
        async with projecting(infra) as (bus, pool, projector):
            session_id = ids.new_id(ids.SESSION)
            records = session_records(session_id, texts)
            for record in records:
                seq = await publish(bus, subjects.session_log(session_id), record)
            env = fixture("catalog", "corral.environment_saved")
            env["environment"].update(id=ids.new_id(ids.ENVIRONMENT), name=env_name[:256])
            env["workspace_id"] = session_id  # names are unique per workspace: one workspace per example
            env_seq = await publish(bus, subjects.environment_log(env["environment"]["id"]), env)
            await projector.caught_up(subjects.SESSIONS_STREAM, seq, timeout=30)
            await projector.caught_up(subjects.CATALOG_STREAM, env_seq, timeout=30)

            events = await pool.fetch("SELECT body FROM events WHERE session_id = $1 ORDER BY seq", session_id)
            expected = [r for r in records[1:] if loads_as_record(r)]
            assert [pgtext.load(e["body"]) for e in events] == expected
            if loads_as_record(records[0]):
                row = await pool.fetchrow("SELECT body FROM sessions WHERE session_id = $1", session_id)
                assert row is not None
                body = pgtext.load(row["body"])
                assert body["title"] == records[0]["session"]["title"]
                assert body["agent"]["name"] == records[0]["session"]["agent"]["name"]
            stored = await pool.fetchrow(
                "SELECT name, body FROM environments WHERE environment_id = $1", env["environment"]["id"]
            )
            if not loads_as_record(env, parse_catalog_record):  # a lone surrogate: not JSON a writer makes
                assert stored is None
                assert await pool.fetchval("SELECT count(*) FROM projection_errors WHERE seq = $1", env_seq)
                return
            assert stored is not None
            assert pgtext.load(stored["body"])["name"] == env_name[:256]
            assert stored["name"] == pgtext.key(env_name[:256])

    asyncio.run(scenario())


def test_a_record_the_projection_cannot_hold_is_recorded_and_skipped_for_its_row_only(
    infra: tuple[str, str],
) -> None:
    async def scenario() -> None:
        async with projecting(infra) as (bus, pool, projector):
            errors_before = await pool.fetchval("SELECT count(*) FROM projection_errors")
            # A session with a record whose timestamp is not one, between two good sessions.
            good_before, bad, good_after = (ids.new_id(ids.SESSION) for _ in range(3))
            for session_id in (good_before, bad, good_after):
                for record in session_records(session_id, ["hello\x00"]):
                    await publish(bus, subjects.session_log(session_id), record)
            broken = session_records(bad, ["x"])[1]
            broken["processed_at"] = "not a time"
            broken_seq = await publish(bus, subjects.session_log(bad), broken)
            after = session_records(bad, ["still here"])[1]
            last = await publish(bus, subjects.session_log(bad), after)
            # An environment whose name is too long for the name index (random: it does not compress), then a
            # fine one.
            env = fixture("catalog", "corral.environment_saved")
            env["environment"].update(id=ids.new_id(ids.ENVIRONMENT), name=secrets.token_hex(5_000))
            too_long_seq = await publish(bus, subjects.environment_log(env["environment"]["id"]), env)
            fine = fixture("catalog", "corral.environment_saved")
            fine["environment"].update(id=ids.new_id(ids.ENVIRONMENT), name="fine")
            fine_seq = await publish(bus, subjects.environment_log(fine["environment"]["id"]), fine)

            await projector.caught_up(subjects.SESSIONS_STREAM, last, timeout=30)
            await projector.caught_up(subjects.CATALOG_STREAM, fine_seq, timeout=30)

            errors = await pool.fetch("SELECT stream, seq, error FROM projection_errors ORDER BY stream")
            assert len(errors) == errors_before + 2
            by_seq = {(e["stream"], e["seq"]): e["error"] for e in errors}
            assert (subjects.SESSIONS_STREAM, broken_seq) in by_seq
            assert "ProgramLimitExceeded" in by_seq[(subjects.CATALOG_STREAM, too_long_seq)]
            assert projector.errors == 2 and projector.last_error
            for session_id, count in ((good_before, 2), (good_after, 2), (bad, 3)):
                events = await pool.fetchval("SELECT count(*) FROM events WHERE session_id = $1", session_id)
                assert events == count, session_id
            assert await pool.fetchval(
                "SELECT count(*) FROM environments WHERE environment_id = $1", fine["environment"]["id"]
            )

        # A projector started afterwards (a restarted session-store) goes on from past both records.
        async with projecting(infra) as (bus, pool, projector):
            session_id = ids.new_id(ids.SESSION)
            for record in session_records(session_id, ["after restart"]):
                seq = await publish(bus, subjects.session_log(session_id), record)
            await projector.caught_up(subjects.SESSIONS_STREAM, seq, timeout=30)
            assert projector.errors == 0
            assert await pool.fetchval("SELECT count(*) FROM events WHERE session_id = $1", session_id) == 2

    asyncio.run(scenario())


def test_garbage_on_the_log_never_stops_the_projector(infra: tuple[str, str]) -> None:
    async def scenario() -> None:
        async with projecting(infra) as (bus, pool, projector):
            session_id = ids.new_id(ids.SESSION)
            subject = subjects.session_log(session_id)
            for junk in (b"\x00\xff\xfe", b'{"type": "user.message", "content": "\\ud800"}', b"{}", b"null"):
                await publish(bus, subject, junk)
            for record in session_records(session_id, ["ok"]):
                seq = await publish(bus, subject, record)
            await projector.caught_up(subjects.SESSIONS_STREAM, seq, timeout=30)
            assert await pool.fetchval("SELECT count(*) FROM events WHERE session_id = $1", session_id) == 2
            assert projector.errors == 4
            recorded = await pool.fetchval(
                "SELECT count(*) FROM projection_errors WHERE stream = $1 AND subject = $2",
                subjects.SESSIONS_STREAM,
                subject,
            )
            assert recorded == 4

    asyncio.run(scenario())


def test_catalog_records_no_writer_could_have_made_are_recorded_and_skipped(infra: tuple[str, str]) -> None:
    """The catalog fold is typed: a record of a type this reader does not know, one missing a field, or
    one that is not JSON goes to ``projection_errors``; the records around it are projected."""

    async def scenario() -> None:
        async with projecting(infra) as (bus, pool, projector):
            env = fixture("catalog", "corral.environment_saved")
            env["environment"].update(id=ids.new_id(ids.ENVIRONMENT), name=secrets.token_hex(8))
            subject = subjects.environment_log(env["environment"]["id"])
            before = await publish(bus, subject, env)
            missing = copy.deepcopy(env)
            del missing["environment"]["created_at"]
            junk: list[dict[str, Any] | bytes] = [
                {"type": "corral.workspace_created", "workspace_id": "w", "name": "w"},
                missing,
                b"\x00\xff\xfe",
                b"null",
            ]
            junk_seqs = [await publish(bus, subject, j) for j in junk]
            renamed = copy.deepcopy(env)
            renamed["environment"]["name"] = secrets.token_hex(8)
            last = await publish(bus, subject, renamed)
            await projector.caught_up(subjects.CATALOG_STREAM, last, timeout=30)

            assert projector.errors == len(junk)
            errors = await pool.fetch(
                "SELECT seq, error FROM projection_errors WHERE stream = $1 AND subject = $2 ORDER BY seq",
                subjects.CATALOG_STREAM,
                subject,
            )
            assert [e["seq"] for e in errors] == junk_seqs
            assert all("ValidationError" in e["error"] for e in errors), errors
            assert before not in junk_seqs
            row = await pool.fetchrow(
                "SELECT name, log_seq, body FROM environments WHERE environment_id = $1", env["environment"]["id"]
            )
            assert row is not None
            assert row["log_seq"] == last and row["name"] == renamed["environment"]["name"]
            assert pgtext.load(row["body"]) == renamed["environment"]

    asyncio.run(scenario())


async def _snapshot(pool: asyncpg.Pool, session_ids: list[str]) -> tuple[list[Any], list[Any]]:
    sessions = await pool.fetch(
        "SELECT session_id, status, last_seq, body FROM sessions WHERE session_id = ANY($1) ORDER BY session_id",
        session_ids,
    )
    events = await pool.fetch(
        "SELECT session_id, seq, event_id, type, body FROM events WHERE session_id = ANY($1) ORDER BY session_id, seq",
        session_ids,
    )
    return [tuple(r) for r in sessions], [tuple(r) for r in events]


def test_the_session_log_projected_again_from_an_older_position_changes_nothing(infra: tuple[str, str]) -> None:
    """Rows and positions are written together (one statement for a batch without deletions, a
    transaction with one): a batch applied again, as after a crash that lost its commit, changes
    nothing, and a deleted session stays deleted."""

    async def scenario() -> None:
        kept = [ids.new_id(ids.SESSION) for _ in range(3)]
        gone = ids.new_id(ids.SESSION)
        async with projecting(infra) as (bus, pool, projector):
            for sid in kept:
                for record in session_records(sid, ["one", "two"]):
                    last = await publish(bus, subjects.session_log(sid), record)
            for record in session_records(gone, ["bye"]):
                await publish(bus, subjects.session_log(gone), record)
            tombstone = fixture("session", "corral.session_deleted")
            last = await publish(bus, subjects.session_log(gone), tombstone)
            await projector.caught_up(subjects.SESSIONS_STREAM, last, timeout=30)
            before = await _snapshot(pool, [*kept, gone])
            assert len(before[0]) == 3 and len(before[1]) == 12
            # as if the last commits were lost: the projector replays the whole log
            await pool.execute("UPDATE projection_positions SET seq = 0 WHERE stream = $1", subjects.SESSIONS_STREAM)
        async with projecting(infra) as (bus, pool, projector):
            await projector.caught_up(subjects.SESSIONS_STREAM, last, timeout=30)
            assert await _snapshot(pool, [*kept, gone]) == before
            position = await pool.fetchval(
                "SELECT seq FROM projection_positions WHERE stream = $1", subjects.SESSIONS_STREAM
            )
            assert position == last

    asyncio.run(scenario())


def test_the_rows_kept_between_batches_stay_the_fold_of_the_log_when_a_batch_fails(infra: tuple[str, str]) -> None:
    """The projector keeps the rows it committed (``KeptRows``) and reads none back for a session it
    continues. Twenty turns, each stored as one atomic batch (so delivered, and mostly projected, as
    one batch), the eleventh holding a status whose time is not one: that batch fails after the
    kept row took its first records, and is projected again one record at a time. The row is the
    fold of the log without that record: statuses, active time, token counts, last sequence."""

    def record(name: str, **fields: Any) -> dict[str, Any]:
        out = copy.deepcopy(fixture("session", name))
        out.update(id=ids.new_id(ids.EVENT), **fields)
        return out

    async def scenario() -> None:
        session_id = ids.new_id(ids.SESSION)
        subject = subjects.session_log(session_id)
        folded = SessionRow(session_id=session_id)

        async def put(batch: list[dict[str, Any]], broken: dict[str, Any] | None = None) -> int:
            datas = [json.dumps(r).encode() for r in batch]
            acks = await bus.publish_batch(subject, [OutgoingRecord(d, {}) for d in datas])
            for r, data, ack in zip(batch, datas, acks, strict=True):
                if r is not broken:
                    folded.apply(parse_session_record(data), ack.seq)
            return acks[-1].seq

        async with projecting(infra) as (bus, pool, projector):
            last = await put(session_records(session_id, []))
            for turn in range(20):
                start, end = f"2026-01-01T00:{turn:02d}:00.000000Z", f"2026-01-01T00:{turn:02d}:07.500000Z"
                usage = {"input_tokens": 100 + turn, "output_tokens": 7, "cache_creation_input_tokens": 1}
                broken = record("session.status_running", processed_at="not a time") if turn == 10 else None
                batch = [
                    record("session.status_running", processed_at=start),
                    record("span.model_request_end", processed_at=end, model_usage=usage),
                    *([broken] if broken else []),
                    record("session.status_idle", processed_at=end),
                ]
                last = await put(batch, broken)
            await projector.caught_up(subjects.SESSIONS_STREAM, last, timeout=30)
            row = await pool.fetchrow(
                "SELECT status, active_seconds, input_tokens, output_tokens, cache_creation_input_tokens, last_seq "
                "FROM sessions WHERE session_id = $1",
                session_id,
            )
            assert projector.errors == 1
            assert folded.active_seconds == 20 * 7.5 and folded.input_tokens == sum(100 + t for t in range(20))
            assert tuple(row) == (
                folded.status,
                folded.active_seconds,
                folded.input_tokens,
                folded.output_tokens,
                folded.cache_creation_input_tokens,
                folded.last_seq,
            )

    asyncio.run(scenario())
