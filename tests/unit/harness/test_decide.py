from __future__ import annotations

from typing import Any

from corral.harness.decide import NOTHING, Plan, decide, has_pending_input, interrupted_after, orphan_starts
from tests.unit.harness.fakes import agent, end, idle, interrupt, logged, running, start, user


def session(status: str = "idle", **more: Any) -> dict[str, Any]:
    return {"id": "sesn_test", "status": status, **more}


def test_an_idle_session_with_an_empty_log_has_nothing_to_do() -> None:
    assert decide(session(), []) == NOTHING


def test_an_idle_session_whose_last_turn_ended_has_nothing_to_do() -> None:
    log = logged(user("hi"), running(), start("s1"), agent("hello"), end("s1"), idle())

    assert decide(session("idle"), log) == NOTHING


def test_a_new_user_message_on_an_idle_session_starts_a_turn() -> None:
    log = logged(user("hi"), running(), start("s1"), agent("hello"), end("s1"), idle(), user("again"))

    assert decide(session("idle"), log) == Plan("model_request", statuses=("session.status_running",))


def test_a_running_session_inherited_from_a_dead_worker_is_rescheduled_and_its_orphan_closed() -> None:
    log = logged(user("hi"), running(), start("s1"))

    assert decide(session("running"), log) == Plan(
        "model_request",
        statuses=("session.status_rescheduled", "session.status_running"),
        close_orphans=("s1",),
    )


def test_a_worker_that_died_before_its_first_request_is_rescheduled_without_orphans() -> None:
    log = logged(user("hi"), running())

    assert decide(session("running"), log) == Plan(
        "model_request", statuses=("session.status_rescheduled", "session.status_running")
    )


def test_a_rescheduling_session_only_needs_running_again() -> None:
    log = logged(user("hi"), running(), start("s1"), end("s1", is_error=True), {"type": "session.status_rescheduled"})

    assert decide(session("rescheduling"), log) == Plan("model_request", statuses=("session.status_running",))


def test_a_turn_that_ran_out_of_retries_is_not_pending_any_more() -> None:
    log = logged(user("hi"), running(), start("s1"), end("s1", is_error=True), idle("retries_exhausted"))

    assert not has_pending_input(log)
    assert decide(session("idle"), log) == NOTHING


def test_a_message_that_arrived_during_the_last_request_is_still_pending() -> None:
    log = logged(user("first"), running(), start("s1"), user("second"), agent("reply"), end("s1"), idle())

    assert has_pending_input(log)
    assert decide(session("idle"), log).action == "model_request"


def test_an_interrupt_after_the_last_message_cancels_the_pending_input() -> None:
    log = logged(user("hi"), interrupt())

    assert not has_pending_input(log)
    assert decide(session("idle"), log) == NOTHING


def test_an_interrupted_turn_of_a_dead_worker_is_closed_and_ended() -> None:
    log = logged(user("hi"), running(), start("s1"), interrupt())

    assert decide(session("running"), log) == Plan("end_turn", close_orphans=("s1",))


def test_a_message_after_an_interrupt_is_pending() -> None:
    log = logged(user("hi"), interrupt(), user("actually, go on"))

    assert has_pending_input(log)


def test_a_message_with_nothing_the_model_can_read_is_not_input() -> None:
    log = logged({"type": "user.message", "id": "u", "content": [{"type": "redacted"}]})

    assert decide(session("idle"), log) == NOTHING


def test_terminated_and_archived_sessions_are_left_alone() -> None:
    log = logged(user("hi"))

    assert decide(session("terminated"), log) == NOTHING
    assert decide(session("idle", archived_at="2026-01-01T00:00:00Z"), log) == NOTHING


def test_orphan_starts_are_the_starts_without_an_end() -> None:
    log = logged(start("s1"), end("s1"), start("s2"), start("s3"), end("s3", is_error=True))

    assert orphan_starts(log) == ("s2",)


def test_interrupted_after_looks_only_past_the_given_sequence() -> None:
    log = logged(user("hi"), interrupt(), start("s1"))

    assert interrupted_after(log, 1)
    assert not interrupted_after(log, 2)
