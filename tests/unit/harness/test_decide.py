from __future__ import annotations

from typing import Any

from corral.harness.decide import (
    INTERRUPTED,
    NOT_RUN,
    NOTHING,
    POLICY_DENIED,
    Answer,
    Plan,
    ToolCall,
    decide,
)
from corral.harness.ledger import has_pending_input, interrupted_after, orphan_starts
from corral.harness.messageblocks import denial_content
from tests.unit.harness.fakes import (
    agent,
    confirm,
    custom_result,
    custom_use,
    end,
    idle,
    interrupt,
    logged,
    requires_action,
    running,
    start,
    tool_result,
    tool_use,
    user,
)


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


# --- the tool loop ------------------------------------------------------------------------------------

RUN = ("session.status_running",)
RESCHEDULE = ("session.status_rescheduled", "session.status_running")


def bash(id: str, command: str = "ls", *, permission: str = "allow") -> dict[str, Any]:
    return tool_use(id, "bash", {"command": command}, permission=permission)


def call(id: str, command: str = "ls") -> ToolCall:
    return ToolCall(id, "bash", {"command": command})


def turn_with(*uses: dict[str, Any]) -> list[Any]:
    """A turn whose model request ended with ``uses`` (the session still running)."""
    return [user("go"), running(), start("s1"), agent("on it"), *uses, end("s1")]


def test_allowed_tool_uses_are_executed_in_order() -> None:
    log = logged(*turn_with(bash("t1", "one"), bash("t2", "two")))

    assert decide(session("running"), log, owned=True) == Plan("tools", execute=(call("t1", "one"), call("t2", "two")))


def test_after_every_result_the_model_is_asked_again() -> None:
    log = logged(*turn_with(bash("t1"), bash("t2")), tool_result("t1"), tool_result("t2"))

    assert decide(session("running"), log, owned=True) == Plan("model_request")


def test_only_the_tool_uses_without_a_result_are_executed() -> None:
    log = logged(*turn_with(bash("t1"), bash("t2")), tool_result("t1"))

    assert decide(session("running"), log, owned=True) == Plan("tools", execute=(call("t2"),))


def test_a_finished_tool_loop_has_nothing_left_to_do() -> None:
    log = logged(*turn_with(bash("t1")), tool_result("t1"), start("s2"), agent("done"), end("s2"), idle())

    assert decide(session("idle"), log) == NOTHING


def test_tool_uses_that_ask_idle_with_requires_action_listing_them() -> None:
    log = logged(*turn_with(bash("t1", permission="ask"), custom_use("c1")))

    assert decide(session("running"), log, owned=True) == Plan("requires_action", awaiting=("t1", "c1"))


def test_a_requires_action_already_announced_is_left_alone_even_with_new_messages() -> None:
    log = logged(*turn_with(bash("t1", permission="ask")), requires_action("t1"), user("hello?"))

    assert decide(session("idle"), log) == NOTHING


def test_allowed_calls_run_before_the_session_asks_for_the_rest() -> None:
    log = logged(*turn_with(bash("t1"), bash("t2", permission="ask")))

    assert decide(session("running"), log, owned=True) == Plan("tools", execute=(call("t1"),))
    log = logged(*turn_with(bash("t1"), bash("t2", permission="ask")), tool_result("t1"))
    assert decide(session("running"), log, owned=True) == Plan("requires_action", awaiting=("t2",))


def test_a_confirmed_call_runs_and_the_rest_is_asked_for_again() -> None:
    asked = [*turn_with(bash("t1", permission="ask"), custom_use("c1")), requires_action("t1", "c1")]

    log = logged(*asked, confirm("t1", "allow"))
    assert decide(session("idle"), log) == Plan("tools", statuses=RUN, execute=(call("t1"),))

    log = logged(*asked, confirm("t1", "allow"), running(), tool_result("t1"))
    assert decide(session("running"), log, owned=True) == Plan("requires_action", awaiting=("c1",))


def test_a_denied_call_gets_its_error_result_and_the_remainder_is_asked_for_again() -> None:
    asked = [*turn_with(bash("t1", permission="ask"), bash("t2", permission="ask")), requires_action("t1", "t2")]

    log = logged(*asked, confirm("t1", "deny", deny_message="not that"))

    assert decide(session("idle"), log) == Plan(
        "tools", statuses=RUN, answers=(Answer("t1", tuple(denial_content("not that"))),)
    )
    log = logged(*asked, confirm("t1", "deny"), running(), tool_result("t1", is_error=True))
    assert decide(session("running"), log, owned=True) == Plan("requires_action", awaiting=("t2",))


def test_once_everything_is_answered_the_model_is_asked_again() -> None:
    log = logged(
        *turn_with(bash("t1", permission="ask"), custom_use("c1")), requires_action("t1", "c1"),
        confirm("t1", "deny"), running(), tool_result("t1", is_error=True), requires_action("c1"),
        custom_result("c1"),
    )  # fmt: skip

    assert decide(session("idle"), log) == Plan("model_request", statuses=RUN)


def test_a_custom_result_sent_before_the_session_idled_still_counts() -> None:
    log = logged(
        *turn_with(bash("t1"), custom_use("c1")), custom_result("c1"), tool_result("t1"), requires_action("c1")
    )

    assert decide(session("idle"), log) == Plan("model_request", statuses=RUN)


def test_a_call_refused_by_its_policy_is_answered_with_an_error() -> None:
    log = logged(*turn_with(bash("t1", permission="deny")))

    assert decide(session("running"), log, owned=True) == Plan("tools", answers=(Answer.text("t1", POLICY_DENIED),))


def test_confirmations_and_results_for_calls_already_answered_change_nothing() -> None:
    log = logged(
        *turn_with(bash("t1", permission="ask")), requires_action("t1"), confirm("t1", "allow"),
        running(), tool_result("t1"), start("s2"), agent("done"), end("s2"), idle(),
        confirm("t1", "deny"), tool_result("t1", "again"), custom_result("t1"),
    )  # fmt: skip

    assert decide(session("idle"), log) == NOTHING


def test_a_crash_after_the_tool_use_executes_it_again_under_the_same_id() -> None:
    log = logged(*turn_with(bash("t1")))

    assert decide(session("running"), log) == Plan("tools", statuses=RESCHEDULE, execute=(call("t1"),))


def test_a_crash_mid_way_through_parallel_calls_runs_only_the_rest() -> None:
    log = logged(*turn_with(bash("t1"), bash("t2")), tool_result("t1"))

    assert decide(session("running"), log) == Plan("tools", statuses=RESCHEDULE, execute=(call("t2"),))


def test_a_crash_after_the_last_result_asks_the_model() -> None:
    log = logged(*turn_with(bash("t1")), tool_result("t1"))

    assert decide(session("running"), log) == Plan("model_request", statuses=RESCHEDULE)


def test_a_crash_during_the_next_request_closes_it_and_asks_again() -> None:
    log = logged(*turn_with(bash("t1")), tool_result("t1"), start("s2"))

    assert decide(session("running"), log) == Plan("model_request", statuses=RESCHEDULE, close_orphans=("s2",))


def test_a_crash_before_requires_action_was_appended_appends_it() -> None:
    log = logged(*turn_with(bash("t1", permission="ask")))

    assert decide(session("running"), log) == Plan("requires_action", awaiting=("t1",))


def test_an_interrupt_while_tools_wait_for_the_user_ends_the_turn() -> None:
    log = logged(*turn_with(bash("t1", permission="ask"), custom_use("c1")), requires_action("t1", "c1"), interrupt())

    assert decide(session("idle"), log) == Plan(
        "end_turn", statuses=RUN, answers=(Answer.text("t1", NOT_RUN), Answer.text("c1", NOT_RUN))
    )


def test_an_interrupt_between_tool_calls_closes_the_calls_not_run() -> None:
    log = logged(*turn_with(bash("t1"), bash("t2")), interrupt(), tool_result("t1", INTERRUPTED, is_error=True))

    assert decide(session("running"), log, owned=True) == Plan("end_turn", answers=(Answer.text("t2", NOT_RUN),))


def test_an_interrupt_of_a_dead_workers_tool_call_cancels_it() -> None:
    log = logged(*turn_with(bash("t1"), bash("t2", permission="ask")), interrupt())

    assert decide(session("running"), log) == Plan(
        "end_turn",
        answers=(Answer.text("t1", INTERRUPTED), Answer.text("t2", NOT_RUN)),
        cancel=("t1",),
    )


def test_an_interrupted_tool_loop_is_over() -> None:
    log = logged(
        *turn_with(bash("t1")), interrupt(), tool_result("t1", INTERRUPTED, is_error=True), idle(),
    )  # fmt: skip

    assert not has_pending_input(log)
    assert decide(session("idle"), log) == NOTHING
    assert decide(session("idle"), logged(*log_events(log), user("next"))) == Plan("model_request", statuses=RUN)


def test_an_interrupt_before_the_tool_uses_does_not_touch_them() -> None:
    log = logged(user("x"), interrupt(), *turn_with(bash("t1")))

    assert decide(session("running"), log, owned=True) == Plan("tools", execute=(call("t1"),))


def test_results_before_a_turn_ending_idle_are_not_input_again() -> None:
    log = logged(
        *turn_with(bash("t1")), tool_result("t1"), start("s2"), end("s2", is_error=True), idle("retries_exhausted")
    )

    assert decide(session("idle"), log) == NOTHING


def test_a_running_session_with_everything_answered_and_nothing_pending_ends_its_turn() -> None:
    log = logged(*turn_with(bash("t1")), interrupt(), tool_result("t1", is_error=True))

    assert decide(session("running"), log, owned=True) == Plan("end_turn")


def log_events(log: list[Any]) -> list[dict[str, Any]]:
    return [entry.event for entry in log]


# --- the tool call limit --------------------------------------------------------------------------------


def limit_error() -> dict[str, Any]:
    return {
        "type": "session.error",
        "id": "e1",
        "error": {"type": "tool_use_limit_reached_error", "message": "limit", "retry_status": {"type": "terminal"}},
    }


def test_a_turn_at_its_tool_call_limit_ends_instead_of_asking_the_model() -> None:
    log = logged(*turn_with(bash("t1"), bash("t2")), tool_result("t1"), tool_result("t2"))

    assert decide(session("running"), log, owned=True, max_tool_uses=2) == Plan("tool_limit")
    assert decide(session("running"), log, owned=True, max_tool_uses=3) == Plan("model_request")


def test_the_calls_already_made_still_run_at_the_limit() -> None:
    log = logged(*turn_with(bash("t1"), bash("t2")), tool_result("t1"))

    assert decide(session("running"), log, owned=True, max_tool_uses=1) == Plan("tools", execute=(call("t2"),))


def test_the_limit_counts_every_request_of_the_turn() -> None:
    log = logged(
        *turn_with(bash("t1")), tool_result("t1"), start("s2"), bash("t2"), end("s2"), tool_result("t2"),
    )  # fmt: skip

    assert decide(session("running"), log, owned=True, max_tool_uses=2) == Plan("tool_limit")


def test_a_turn_ended_by_the_limit_has_nothing_left_to_do() -> None:
    log = logged(
        *turn_with(bash("t1"), custom_use("c1")), tool_result("t1"), requires_action("c1"), custom_result("c1"),
        running(), limit_error(), idle(),
    )  # fmt: skip

    assert decide(session("idle"), log, max_tool_uses=2) == NOTHING
    assert not has_pending_input(log)


def test_a_user_message_starts_a_new_count() -> None:
    ended = [*turn_with(bash("t1")), tool_result("t1"), limit_error(), idle()]

    log = logged(*ended, user("keep going"))
    assert decide(session("idle"), log, max_tool_uses=1) == Plan("model_request", statuses=RUN)


def test_a_message_sent_while_the_limit_was_reached_is_still_answered() -> None:
    log = logged(*turn_with(bash("t1")), user("and then?"), tool_result("t1"), limit_error(), idle())

    assert decide(session("idle"), log, max_tool_uses=1) == Plan("model_request", statuses=RUN)
