"""Two session-stores append to one session, each with its own cached state, on real NATS JetStream:
an append the first store's cached state would refuse (the session was idle when it cached it) is
decided on the state the log has now, which the other store moved on (running), not refused. An
append's records are one atomic batch: fenced out, none of them is stored and the append is decided
again; retried with message ids the log holds, only the records it lacks are stored."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral.bus import Bus
from corral.contracts import ids, subjects
from corral.contracts.api.errors import ApiError
from corral.session_store.domain.sessions import SessionState, check_harness_append
from corral.session_store.log import SessionLog
from corral.settings import NatsSettings
from tests.integration.session_store.test_projector import fixture

pytestmark = pytest.mark.integration


def harness_appends(events: list[dict[str, Any]]) -> Any:
    def decide(state: SessionState) -> list[dict[str, Any]]:
        check_harness_append(state, events)
        return [dict(e) for e in events]

    return decide


def event(kind: str) -> dict[str, Any]:
    record = fixture("session", kind)
    record.pop("id", None)
    record.pop("processed_at", None)
    return record


def test_an_append_refused_on_a_stale_cached_state_is_decided_again_on_the_log(infra: tuple[str, str]) -> None:
    async def scenario() -> None:
        nats_url, _ = infra
        async with (
            Bus.connect(NatsSettings(url=nats_url), name="store-1") as bus1,
            Bus.connect(NatsSettings(url=nats_url), name="store-2") as bus2,
        ):
            await bus1.ensure_stream(subjects.SESSIONS_SPEC)
            one, two = SessionLog(bus1, cache_size=16), SessionLog(bus2, cache_size=16)
            session_id = ids.new_id(ids.SESSION)
            created = fixture("session", "corral.session_created")
            created["session"]["id"] = session_id
            await one.append(session_id, lambda _state: [created], new=True)
            assert (await one.state(session_id)).status == "idle"  # store 1 has it cached, idle

            await two.append(session_id, harness_appends([event("session.status_running")]))
            state, stored = await one.append(session_id, harness_appends([event("span.model_request_start")]))
            assert state.status == "running" and [s.record["type"] for s in stored] == ["span.model_request_start"]

            # and a refusal on the log's own state is still a refusal
            await two.append(session_id, harness_appends([event("session.status_idle")]))
            with pytest.raises(ApiError, match="only allowed while the session is running, not idle"):
                await one.append(session_id, harness_appends([event("span.model_request_start")]))

    asyncio.run(scenario())


def user_messages(*texts: str) -> Any:
    def decide(_state: SessionState) -> list[dict[str, Any]]:
        decided.append(texts)
        return [{"type": "user.message", "content": [{"type": "text", "text": t}]} for t in texts]

    decided: list[tuple[str, ...]] = []
    decide.decided = decided  # type: ignore[attr-defined]
    return decide


def test_an_append_fenced_out_on_a_stale_cache_stores_none_of_its_batch_and_is_stored_once_after(
    infra: tuple[str, str],
) -> None:
    async def scenario() -> None:
        nats_url, _ = infra
        async with (
            Bus.connect(NatsSettings(url=nats_url), name="store-1") as bus1,
            Bus.connect(NatsSettings(url=nats_url), name="store-2") as bus2,
        ):
            await bus1.ensure_stream(subjects.SESSIONS_SPEC)
            one, two = SessionLog(bus1, cache_size=16), SessionLog(bus2, cache_size=16)
            session_id = ids.new_id(ids.SESSION)
            created = fixture("session", "corral.session_created")
            created["session"]["id"] = session_id
            await one.append(session_id, lambda _state: [created], new=True)
            await two.append(session_id, user_messages("from store 2"))  # store 1's cache is now stale

            decide = user_messages("a", "b", "c")
            _, stored = await one.append(session_id, decide)
            assert len(decide.decided) == 2  # fenced out once, decided again on the log's state
            _, log = await one.records(session_id)
            texts = [s.record["content"][0]["text"] for s in log if s.record.get("type") == "user.message"]
            assert texts == ["from store 2", "a", "b", "c"]  # nothing of the fenced-out batch, the retry once
            assert [s.seq for s in stored] == [s.seq for s in log[-3:]]

    asyncio.run(scenario())


def test_a_retried_append_whose_first_records_are_stored_stores_only_the_rest(infra: tuple[str, str]) -> None:
    async def scenario() -> None:
        nats_url, _ = infra
        async with Bus.connect(NatsSettings(url=nats_url), name="store-1") as bus:
            await bus.ensure_stream(subjects.SESSIONS_SPEC)
            log = SessionLog(bus, cache_size=16)
            session_id = ids.new_id(ids.SESSION)
            created = fixture("session", "corral.session_created")
            created["session"]["id"] = session_id
            await log.append(session_id, lambda _state: [created], new=True)
            key = ids.new_id(ids.EVENT)
            _, first = await log.append(session_id, user_messages("a", "b"), msg_ids=[f"{key}:0", f"{key}:1"])
            # the retry holds two stored message ids: the server refuses the batch whole, the store
            # then sends it record by record and reports the stored records for the duplicates
            _, again = await log.append(
                session_id, user_messages("a", "b", "c"), msg_ids=[f"{key}:0", f"{key}:1", f"{key}:2"]
            )
            assert [(s.seq, s.record["id"]) for s in again[:2]] == [(s.seq, s.record["id"]) for s in first]
            assert again[2].seq > first[-1].seq
            _, stored = await log.records(session_id)
            texts = [s.record["content"][0]["text"] for s in stored if s.record.get("type") == "user.message"]
            assert texts == ["a", "b", "c"]

    asyncio.run(scenario())
