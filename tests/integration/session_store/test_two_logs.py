"""Two session-stores append to one session, each with its own cached state, on real NATS JetStream:
an append the first store's cached state would refuse (the session was idle when it cached it) is
decided on the state the log has now, which the other store moved on (running), not refused."""

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
