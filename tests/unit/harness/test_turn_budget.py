"""The driver checks the session's budget before every model request (managed-agents-api.md section 15)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from corral.contracts.api.events import ModelUsage
from corral.harness.decide import plan
from corral.harness.fold import SessionFold, decode
from corral.harness.ledger import Ledger
from corral.harness.pricing import Price
from corral.harness.retry import RetryPolicy
from corral.harness.turn import Outcome, SessionDriver
from tests.unit.harness.fakes import (
    SESSION_ID,
    FakeDeltas,
    FakeModel,
    FakeStore,
    RecordingSleep,
    Reply,
    StoreLog,
    agent_snapshot,
    held_lease,
    logged,
    user,
)

#: claude-test costs $1 per million input tokens and $100 per million output tokens.
PRICES = {"claude-test": Price(Decimal(1), Decimal(100), Decimal(0), Decimal(0))}
#: One reply: 10,000 output tokens = $1.00.
DOLLAR_REPLY = ModelUsage(input_tokens=0, output_tokens=10_000)


def budgeted(cents: int | None, *, model: str = "claude-test") -> FakeStore:
    store = FakeStore(agent=agent_snapshot(model=model))
    if cents is not None:
        limit = {"type": "limit", "max_list_cost": {"amount": str(cents), "currency": "USD"}}
        store.log[0].event["session"]["budget"] = limit
    return store


def driver(store: FakeStore, model: FakeModel) -> SessionDriver:
    return SessionDriver(
        store=store,
        log=StoreLog(store),
        environments=store,
        snapshots=store,
        model=model,
        deltas=FakeDeltas(),
        policy=RetryPolicy(max_retries=0, backoff_s=1.0, max_backoff_s=1.0),
        max_tokens=256,
        sleep=RecordingSleep(),
        prices=PRICES,
    )


def types(store: FakeStore) -> list[list[str]]:
    return [[e["type"] for e in batch] for batch in store.appends]


async def test_a_request_within_the_budget_runs_and_logs_the_usage_with_its_list_cost() -> None:
    store = budgeted(250)
    store.add(user("hi"))
    model = FakeModel(Reply(["ok"], usage=DOLLAR_REPLY))

    assert await driver(store, model).run(SESSION_ID, held_lease()) is Outcome.DONE

    assert len(model.requests) == 1
    closing = store.appends[-1]
    assert [e["type"] for e in closing] == [
        "agent.message",
        "span.model_request_end",
        "session.usage",
        "session.status_idle",
    ]
    usage_event = closing[2]
    assert usage_event["usage"]["list_cost"] == {"amount": "100", "currency": "USD"}
    assert usage_event["usage"]["output_tokens"] == 10_000
    assert usage_event["budget"]["max_list_cost"]["amount"] == "250"


async def test_a_reached_budget_pauses_the_session_instead_of_the_next_request() -> None:
    store = budgeted(100)
    store.add(user("first"))
    model = FakeModel(Reply(["one"], usage=DOLLAR_REPLY), Reply(["two"], usage=DOLLAR_REPLY))
    assert await driver(store, model).run(SESSION_ID, held_lease()) is Outcome.DONE
    store.add(user("second"))

    assert await driver(store, model).run(SESSION_ID, held_lease()) is Outcome.DONE

    assert len(model.requests) == 1  # the second message never reached the model
    assert types(store)[-1] == ["session.status_running", "session.usage", "session.status_idle"]
    usage_event, idle_event = store.appends[-1][1:]
    assert idle_event["stop_reason"] == {"type": "budget_reached"}
    assert usage_event["usage"]["list_cost"]["amount"] == "100"


async def test_a_tool_loop_stops_at_the_budget_between_requests() -> None:
    store = budgeted(100, model="claude-test")
    store.log[0].event["session"]["agent"]["tools"] = [
        {"type": "custom", "name": "lookup", "description": "d", "input_schema": {"type": "object"}}
    ]
    store.add(user("go"))
    model = FakeModel(Reply(["calling"], usage=DOLLAR_REPLY, tools=[("lookup", {})]))
    assert await driver(store, model).run(SESSION_ID, held_lease()) is Outcome.DONE
    use_id = next(e.event["id"] for e in store.events if e.event["type"] == "agent.custom_tool_use")
    store.send({"type": "user.custom_tool_result", "id": "r", "custom_tool_use_id": use_id, "content": []})

    assert await driver(store, model).run(SESSION_ID, held_lease()) is Outcome.DONE

    assert len(model.requests) == 1
    assert store.appends[-1][-1]["stop_reason"] == {"type": "budget_reached"}


async def test_a_raised_budget_and_a_new_message_resume_with_the_held_input() -> None:
    store = budgeted(100)
    store.add(user("first"))
    model = FakeModel(Reply(["one"], usage=DOLLAR_REPLY), Reply(["two"]))
    assert await driver(store, model).run(SESSION_ID, held_lease()) is Outcome.DONE
    store.add(user("held", id="u2"))
    assert await driver(store, model).run(SESSION_ID, held_lease()) is Outcome.DONE
    raised = {"type": "limit", "max_list_cost": {"amount": "500", "currency": "USD"}}
    store.add({"type": "session.updated", "id": "upd", "budget": raised}, user("again", id="u3"))

    assert await driver(store, model).run(SESSION_ID, held_lease()) is Outcome.DONE

    assert len(model.requests) == 2
    last_user = model.requests[-1].messages[-1]
    assert [block["text"] for block in last_user["content"]] == ["held", "again"]
    assert store.appends[-1][-1]["stop_reason"] == {"type": "end_turn"}


async def test_removing_the_budget_lifts_it() -> None:
    store = budgeted(0)
    store.add(user("first"))
    model = FakeModel(Reply(["one"]))
    assert await driver(store, model).run(SESSION_ID, held_lease()) is Outcome.DONE
    assert model.requests == []
    store.add({"type": "session.updated", "id": "upd", "budget": None}, user("again", id="u3"))

    assert await driver(store, model).run(SESSION_ID, held_lease()) is Outcome.DONE

    assert len(model.requests) == 1
    assert "session.usage" not in types(store)[-1]  # no budget, no usage snapshots


async def test_a_model_with_no_list_price_pauses_a_budgeted_session_before_its_first_request() -> None:
    store = budgeted(10_000, model="unpriced-model")
    store.add(user("hi"))
    model = FakeModel(Reply(["never"]))

    assert await driver(store, model).run(SESSION_ID, held_lease()) is Outcome.DONE

    assert model.requests == []
    assert store.appends[-1][-1]["stop_reason"] == {"type": "budget_reached"}


async def test_without_a_budget_an_unpriced_model_runs_and_no_usage_is_logged() -> None:
    store = budgeted(None, model="unpriced-model")
    store.add(user("hi"))
    model = FakeModel(Reply(["fine"]))

    assert await driver(store, model).run(SESSION_ID, held_lease()) is Outcome.DONE

    assert len(model.requests) == 1
    assert all("session.usage" not in batch for batch in types(store))


def test_a_budget_pause_parks_the_pending_input_so_the_session_rests() -> None:
    session: dict[str, Any] = {"status": "idle"}
    paused = logged(
        user("hi"),
        {"type": "session.status_running", "id": "r"},
        {"type": "session.usage", "id": "usg", "usage": {}},
        {"type": "session.status_idle", "id": "i", "stop_reason": {"type": "budget_reached"}},
    )
    ledger = Ledger()
    for entry in paused:
        ledger.apply(entry.seq, entry.event)
    assert plan(session, ledger).action == "nothing"
    ledger.apply(len(paused) + 1, user("more", id="u2"))
    assert plan(session, ledger).action == "model_request"


def test_a_compaction_summary_counts_toward_the_spend() -> None:
    store = budgeted(100)
    store.add(
        {
            "type": "agent.thread_context_compacted",
            "id": "c1",
            "corral_compaction": {"cleared_tool_results": [], "summary_usage": {"output_tokens": 7}},
        },
        {
            "type": "span.model_request_end",
            "id": "e1",
            "model_request_start_id": "s1",
            "model_usage": {"input_tokens": 3, "output_tokens": 5},
        },
    )
    fold = SessionFold.of(decode(e.seq, json.dumps(e.event).encode()) for e in store.log)
    tokens = fold.spend.by_model["claude-test"]
    assert (tokens.input, tokens.output) == (3, 12)
