"""Two session-stores on one Postgres: only one projects (it holds the projection lock), and the other
still answers every write it handles only once the projection shows it, without waiting out its
timeout. Real NATS JetStream and a real Postgres."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from corral.contracts import ids, subjects
from tests.integration.session_store.test_projector import fixture, projecting, publish, session_records

pytestmark = pytest.mark.integration

#: Well under the store's own wait (5 s) and the gateway's store timeout (3 s): a liveness bound.
PROMPT_S = 2.0


def test_a_store_that_does_not_project_reads_its_own_writes_at_once(infra: tuple[str, str]) -> None:
    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as outer:
            first_stack = contextlib.AsyncExitStack()
            outer.push_async_callback(first_stack.aclose)
            bus, _pool, first = await first_stack.enter_async_context(projecting(infra))
            earlier = ids.new_id(ids.SESSION)
            for record in session_records(earlier, ["before the second store"]):
                seq = await publish(bus, subjects.session_log(earlier), record)
            await first.caught_up(subjects.SESSIONS_STREAM, seq, timeout=30)  # the first store projects

            bus2, pool2, second = await outer.enter_async_context(projecting(infra))
            # What the log held before the second store started is shown to it at once too.
            await second.caught_up(subjects.SESSIONS_STREAM, seq, timeout=PROMPT_S)
            for n in range(3):
                session_id = ids.new_id(ids.SESSION)
                for record in session_records(session_id, [f"through the second store {n}"]):
                    seq = await publish(bus2, subjects.session_log(session_id), record)
                await second.caught_up(subjects.SESSIONS_STREAM, seq, timeout=PROMPT_S)
                shown = await pool2.fetchval("SELECT count(*) FROM events WHERE session_id = $1", session_id)
                assert shown == 2
            env = fixture("catalog", "corral.environment_saved")
            env["environment"].update(id=ids.new_id(ids.ENVIRONMENT), name="seen by the second store")
            env_seq = await publish(bus2, subjects.environment_log(env["environment"]["id"]), env)
            await second.caught_up(subjects.CATALOG_STREAM, env_seq, timeout=PROMPT_S)
            assert await pool2.fetchval(
                "SELECT count(*) FROM environments WHERE environment_id = $1", env["environment"]["id"]
            )
            assert not second.failing and first.projecting and not second.projecting
            assert second.position(subjects.SESSIONS_STREAM) >= seq  # its lag is what the projection lags

            # The first store stops: the second takes the projection over and goes on from its position.
            await first_stack.aclose()
            session_id = ids.new_id(ids.SESSION)
            for record in session_records(session_id, ["after the first store stopped"]):
                seq = await publish(bus2, subjects.session_log(session_id), record)
            await second.caught_up(subjects.SESSIONS_STREAM, seq, timeout=30)
            assert await pool2.fetchval("SELECT count(*) FROM events WHERE session_id = $1", session_id) == 2
            assert second.projecting

    asyncio.run(scenario())
