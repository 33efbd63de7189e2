from __future__ import annotations

import asyncio

import pytest

from corral.contracts import rpc
from corral.contracts.api.errors import ErrorDetail
from corral.harness.lease import Sleep
from corral.harness.model import ModelError
from corral.harness.retry import RetryPolicy
from corral.harness.store import LeaseConflict, LogMoved, StoreError, StoreRejected, StoreUnavailable, error_for
from corral.harness.turn import Outcome, SessionDriver
from tests.unit.harness.fakes import (
    SESSION_ID,
    FakeDeltas,
    FakeModel,
    FakeStore,
    RecordingSleep,
    Reply,
    StoreLog,
    agent,
    agent_snapshot,
    end,
    held_lease,
    idle,
    interrupt,
    running,
    start,
    text,
    user,
)

OVERLOADED = ModelError("model_overloaded_error", "The model API answered 529 overloaded_error", retryable=True)
BAD_REQUEST = ModelError("model_request_failed_error", "The model API answered 400", retryable=False)


def driver(
    store: FakeStore,
    model: FakeModel,
    *,
    deltas: FakeDeltas | None = None,
    sleep: Sleep | None = None,
    max_retries: int = 3,
    reach_timeout_s: float = 10.0,
) -> SessionDriver:
    return SessionDriver(
        store=store,
        log=StoreLog(store),
        environments=store,
        snapshots=store,
        model=model,
        deltas=deltas or FakeDeltas(),
        policy=RetryPolicy(max_retries=max_retries, backoff_s=1.0, max_backoff_s=30.0),
        max_tokens=256,
        sleep=sleep or RecordingSleep(),
        reach_timeout_s=reach_timeout_s,
    )


def append_types(store: FakeStore) -> list[list[str]]:
    return [[e["type"] for e in batch] for batch in store.appends]


async def test_a_pending_message_runs_one_turn_ending_in_a_single_append() -> None:
    store = FakeStore()
    store.add(user("hi"))
    model = FakeModel(Reply(["Hel", "lo"]))

    outcome = await driver(store, model).run(SESSION_ID, held_lease())

    assert outcome is Outcome.DONE
    assert append_types(store) == [
        ["session.status_running", "span.model_request_start"],
        ["agent.message", "span.model_request_end", "session.status_idle"],
    ]
    message, span_end, idle_event = store.appends[1]
    assert message["content"] == text("Hello")
    assert span_end["model_request_start_id"] == store.appends[0][1]["id"]
    assert span_end["is_error"] is False
    assert span_end["model_usage"] == {
        "input_tokens": 12,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert idle_event["stop_reason"] == {"type": "end_turn"}
    assert all("processed_at" not in e and e["id"].startswith("sevt_") for batch in store.appends for e in batch)
    assert store.leases == [rpc.Lease(holder="worker-1", token="token-1")] * 2


async def test_the_request_carries_the_agents_model_system_and_the_rebuilt_conversation() -> None:
    store = FakeStore(agent=agent_snapshot(model="claude-opus-test", system="You are terse."))
    store.add(user("first"), running(), start("s0"), agent("reply"), end("s0"), idle(), user("second"))
    model = FakeModel(Reply(["ok"]))

    await driver(store, model).run(SESSION_ID, held_lease())

    [request] = model.requests
    assert (request.model, request.system, request.max_tokens) == ("claude-opus-test", "You are terse.", 256)
    assert request.messages == [
        {"role": "user", "content": text("first")},
        {"role": "assistant", "content": text("reply")},
        {"role": "user", "content": text("second")},
    ]


async def test_deltas_preview_the_agent_message_under_its_final_id() -> None:
    store = FakeStore()
    store.add(user("hi"))
    deltas = FakeDeltas()

    await driver(store, FakeModel(Reply(["Hel", "lo ", "world"])), deltas=deltas).run(SESSION_ID, held_lease())

    [message] = store.of_type("agent.message")
    first, *rest = deltas.frames
    assert first == {"type": "event_start", "event": {"type": "agent.message", "id": message["id"]}}
    assert all(f["type"] == "event_delta" and f["event_id"] == message["id"] for f in rest)
    assert [f["delta"]["index"] for f in rest] == [0, 0, 0]
    assert "".join(f["delta"]["content"]["text"] for f in rest) == message["content"][0]["text"] == "Hello world"


async def test_a_reply_without_text_still_closes_the_span_and_ends_the_turn() -> None:
    store = FakeStore()
    store.add(user("hi"))

    outcome = await driver(store, FakeModel(Reply([]))).run(SESSION_ID, held_lease())

    assert outcome is Outcome.DONE
    assert append_types(store)[-1] == ["span.model_request_end", "session.status_idle"]


async def test_failures_are_appended_and_retried_until_the_model_answers() -> None:
    store = FakeStore()
    store.add(user("hi"))
    sleep = RecordingSleep()
    model = FakeModel(OVERLOADED, OVERLOADED, Reply(["finally"]))

    outcome = await driver(store, model, sleep=sleep).run(SESSION_ID, held_lease())

    assert outcome is Outcome.DONE
    assert append_types(store) == [
        ["session.status_running", "span.model_request_start"],
        ["span.model_request_end", "session.error", "session.status_rescheduled"],
        ["session.status_running", "span.model_request_start"],
        ["span.model_request_end", "session.error", "session.status_rescheduled"],
        ["session.status_running", "span.model_request_start"],
        ["agent.message", "span.model_request_end", "session.status_idle"],
    ]
    errors = store.of_type("session.error")
    assert [e["error"]["retry_status"]["type"] for e in errors] == ["retrying", "retrying"]
    assert errors[0]["error"]["type"] == "model_overloaded_error"
    assert all(e["is_error"] for e in store.of_type("span.model_request_end")[:2])
    assert sleep.delays == [1.0, 2.0]
    assert len(model.requests) == 3


async def test_a_model_that_keeps_failing_exhausts_the_retries_and_ends_the_turn() -> None:
    store = FakeStore()
    store.add(user("hi"))
    sleep = RecordingSleep()

    outcome = await driver(store, FakeModel(*[OVERLOADED] * 4), sleep=sleep).run(SESSION_ID, held_lease())

    assert outcome is Outcome.DONE
    statuses = [e["error"]["retry_status"]["type"] for e in store.of_type("session.error")]
    assert statuses == ["retrying", "retrying", "retrying", "exhausted"]
    assert store.appends[-1][-1]["stop_reason"] == {"type": "retries_exhausted"}
    assert append_types(store)[-1] == ["span.model_request_end", "session.error", "session.status_idle"]
    assert "agent.message" not in store.types()
    assert sleep.delays == [1.0, 2.0, 4.0]
    starts = [e["id"] for e in store.of_type("span.model_request_start")]
    assert [e["model_request_start_id"] for e in store.of_type("span.model_request_end")] == starts


async def test_an_error_retrying_cannot_fix_ends_the_turn_at_once_and_leaves_the_session_usable() -> None:
    store = FakeStore()
    store.add(user("hi"))
    sleep = RecordingSleep()
    model = FakeModel(BAD_REQUEST)

    outcome = await driver(store, model, sleep=sleep).run(SESSION_ID, held_lease())

    assert outcome is Outcome.DONE
    [error] = store.of_type("session.error")
    assert error["error"] == {
        "type": "model_request_failed_error",
        "message": "The model API answered 400",
        "retry_status": {"type": "exhausted"},
    }
    assert store.appends[-1][-1]["stop_reason"] == {"type": "retries_exhausted"}
    assert store.session["status"] == "idle"
    assert len(model.requests) == 1
    assert sleep.delays == []


async def test_an_agent_without_a_model_ends_the_turn_with_an_exhausted_error() -> None:
    store = FakeStore(agent={"type": "agent", "id": "agent_x"})
    store.add(user("hi"))
    model = FakeModel()

    await driver(store, model).run(SESSION_ID, held_lease())

    assert model.requests == []
    [error] = store.of_type("session.error")
    assert error["error"]["retry_status"] == {"type": "exhausted"}


async def test_an_inherited_turn_closes_the_orphan_start_then_reschedules() -> None:
    store = FakeStore()
    store.add(user("hi"), running(), start("s-orphan"))
    model = FakeModel(Reply(["hello"]))

    outcome = await driver(store, model).run(SESSION_ID, held_lease())

    assert outcome is Outcome.DONE
    assert append_types(store) == [
        ["session.status_rescheduled", "session.status_running", "span.model_request_end", "span.model_request_start"],
        ["agent.message", "span.model_request_end", "session.status_idle"],
    ]
    orphan_end = store.appends[0][2]
    assert (orphan_end["model_request_start_id"], orphan_end["is_error"]) == ("s-orphan", True)
    assert orphan_end["model_usage"]["input_tokens"] == 0
    assert len(store.of_type("agent.message")) == 1


async def test_a_session_left_rescheduling_runs_again_before_its_orphan_is_closed() -> None:
    store = FakeStore()
    store.add(user("hi"), running(), start("s-orphan"), {"type": "session.status_rescheduled", "id": "r"})

    outcome = await driver(store, FakeModel(Reply(["hello"]))).run(SESSION_ID, held_lease())

    assert outcome is Outcome.DONE
    assert append_types(store)[0] == ["session.status_running", "span.model_request_end", "span.model_request_start"]


async def test_an_interrupted_inherited_turn_is_closed_and_ended_without_a_model_request() -> None:
    store = FakeStore()
    store.add(user("hi"), running(), start("s-orphan"), interrupt())
    model = FakeModel()

    outcome = await driver(store, model).run(SESSION_ID, held_lease())

    assert outcome is Outcome.DONE
    assert model.requests == []
    assert append_types(store) == [["span.model_request_end", "session.status_idle"]]
    assert store.appends[0][1]["stop_reason"] == {"type": "end_turn"}


async def test_input_that_arrives_during_a_turn_gets_a_second_turn() -> None:
    store = FakeStore()
    store.add(user("first"))
    model = FakeModel(Reply(["one"], pause_after=0), Reply(["two"]))
    run = asyncio.create_task(driver(store, model).run(SESSION_ID, held_lease()))
    async with asyncio.timeout(5):
        await model.paused.wait()
    store.add(user("second"))
    model.resume.set()

    async with asyncio.timeout(5):
        assert await run is Outcome.DONE

    assert store.types()[-8:] == [
        "agent.message", "span.model_request_end", "session.status_idle",
        "session.status_running", "span.model_request_start",
        "agent.message", "span.model_request_end", "session.status_idle",
    ]  # fmt: skip
    assert model.requests[1].messages == [
        {"role": "user", "content": text("first")},
        {"role": "assistant", "content": text("one")},
        {"role": "user", "content": text("second")},
    ]


async def test_losing_the_lease_mid_stream_stops_all_further_appends() -> None:
    store = FakeStore()
    store.add(user("hi"))
    model = FakeModel(Reply(["par", "tial"], pause_after=1))
    lease = held_lease()
    run = asyncio.create_task(driver(store, model).run(SESSION_ID, lease))
    async with asyncio.timeout(5):
        await model.paused.wait()
    appended_before = len(store.appends)

    lease.lost.set()
    async with asyncio.timeout(5):
        outcome = await run

    assert outcome is Outcome.LOST
    assert len(store.appends) == appended_before == 1
    assert model.cancelled


async def test_a_lease_already_lost_means_nothing_is_appended() -> None:
    store = FakeStore()
    store.add(user("hi"))
    lease = held_lease()
    lease.lost.set()

    outcome = await driver(store, FakeModel(Reply(["x"]))).run(SESSION_ID, lease)

    assert outcome is Outcome.LOST
    assert store.appends == []


async def test_the_store_refusing_our_lease_stops_the_session_as_lost() -> None:
    store = FakeStore()
    store.add(user("hi"))
    store.fail_append = LeaseConflict("conflict_error: lease is not yours")

    assert await driver(store, FakeModel(Reply(["x"]))).run(SESSION_ID, held_lease()) is Outcome.LOST


@pytest.mark.parametrize(
    ("error", "outcome"),
    [(StoreUnavailable("no responders"), Outcome.RETRY_LATER), (StoreRejected("gone"), Outcome.REJECTED)],
)
async def test_store_failures_end_the_run_with_what_to_do_next(error: StoreError, outcome: Outcome) -> None:
    store = FakeStore()
    store.add(user("hi"))
    store.fail_log = error

    assert await driver(store, FakeModel()).run(SESSION_ID, held_lease()) is outcome


async def test_a_log_behind_the_wake_up_is_waited_for_and_never_acted_on() -> None:
    store = FakeStore()
    store.add(user("hi"))
    session = driver(store, FakeModel(Reply(["x"])), reach_timeout_s=0.2)

    outcome = await session.run(SESSION_ID, held_lease(), min_seq=store.last_seq + 1)

    assert outcome is Outcome.RETRY_LATER
    assert store.appends == []


async def test_an_interrupt_during_the_stream_ends_the_turn_with_what_was_written() -> None:
    store = FakeStore()
    store.add(user("hi"))
    model = FakeModel(Reply(["Once ", "upon", " a time"], pause_after=2))
    run = asyncio.create_task(driver(store, model).run(SESSION_ID, held_lease()))
    async with asyncio.timeout(5):
        await model.paused.wait()

    store.add(interrupt())
    async with asyncio.timeout(5):
        outcome = await run

    assert outcome is Outcome.DONE
    assert model.cancelled
    assert append_types(store)[-1] == ["agent.message", "span.model_request_end", "session.status_idle"]
    [message] = store.of_type("agent.message")
    assert message["content"] == text("Once upon")
    assert store.appends[-1][-1]["stop_reason"] == {"type": "end_turn"}


async def test_a_wake_up_for_ordinary_input_does_not_interrupt_the_stream() -> None:
    store = FakeStore()
    store.add(user("hi"))
    model = FakeModel(Reply(["all ", "of it"], pause_after=1), Reply(["again"]))
    run = asyncio.create_task(driver(store, model).run(SESSION_ID, held_lease()))
    async with asyncio.timeout(5):
        await model.paused.wait()

    store.add(user("more"))
    model.resume.set()
    async with asyncio.timeout(5):
        await run

    assert [m["content"] for m in store.of_type("agent.message")] == [text("all of it"), text("again")]


async def test_an_interrupt_during_the_backoff_ends_the_turn_without_another_request() -> None:
    store = FakeStore()
    store.add(user("hi"))
    model = FakeModel(OVERLOADED, Reply(["never"]))
    backoff_started = asyncio.Event()
    release = asyncio.Event()

    async def sleep(delay: float) -> None:
        backoff_started.set()
        await release.wait()

    run = asyncio.create_task(driver(store, model, sleep=sleep).run(SESSION_ID, held_lease()))
    async with asyncio.timeout(5):
        await backoff_started.wait()
    store.add(interrupt())

    async with asyncio.timeout(5):
        assert await run is Outcome.DONE

    assert len(model.requests) == 1
    assert append_types(store)[-2:] == [
        ["span.model_request_end", "session.error", "session.status_rescheduled"],
        ["session.status_idle"],
    ]
    assert store.appends[-1][-1]["stop_reason"] == {"type": "end_turn"}


def test_only_lease_conflicts_count_as_losing_the_lease() -> None:
    def detail(code: str | None, kind: str = "conflict_error") -> ErrorDetail:
        return ErrorDetail(type=kind, message="m", details={"error_code": code} if code else None)

    assert isinstance(error_for(detail("lease_lost")), LeaseConflict)
    assert isinstance(error_for(detail("lease_required")), LeaseConflict)
    assert isinstance(error_for(detail(None)), LeaseConflict)
    assert isinstance(error_for(detail("session_not_found")), StoreRejected)
    assert isinstance(error_for(detail(None, "not_found_error")), StoreRejected)
    assert isinstance(error_for(detail(None, "api_error")), StoreUnavailable)
    assert isinstance(error_for(detail(None, "overloaded_error")), StoreUnavailable)
    # a prefix of the append is stored: the next run plans from the log as it is
    assert isinstance(error_for(detail("append_interrupted")), StoreUnavailable)
    # decided on a fold behind the log (its status moved on): nothing stored, decide again
    assert isinstance(error_for(detail("wrong_last_sequence")), LogMoved)
    assert isinstance(error_for(detail("wrong_status")), LogMoved)


@pytest.mark.parametrize(("after_expiry", "counted"), [(False, (1, 0)), (True, (0, 1))])
async def test_a_turn_after_a_wait_for_the_lease_counts_as_a_hand_off_or_a_takeover(
    after_expiry: bool, counted: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    # A wake-up redelivered after its holder died waits for the lease to expire: that turn is a
    # takeover, not a slow hand-off, and must not be counted (nor warned about) as one.
    store = FakeStore()
    store.add(user("hi"))
    lease = held_lease()
    lease.handed_off, lease.after_expiry = True, after_expiry
    turns = driver(store, FakeModel(Reply(["ok"])))

    with caplog.at_level("INFO", logger="corral.harness.turn"):
        assert await turns.run(SESSION_ID, lease) is Outcome.DONE

    assert (turns.handoff_turns, turns.takeover_turns) == counted
    warned = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert ("a turn starts after waiting for the lease hand-off" in warned) is not after_expiry
