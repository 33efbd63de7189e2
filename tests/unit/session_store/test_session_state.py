"""The status machine every append is checked against, and the projection fold."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from corral.contracts.api.errors import ApiError
from corral.contracts.log import SessionRecord, parse_session_record
from corral.session_store.domain.sessions import (
    SessionRow,
    SessionState,
    check_client_append,
    check_harness_append,
)

CREATED = {
    "type": "corral.session_created",
    "workspace_id": "w",
    "session": {
        "id": "sesn_1",
        "status": "idle",
        "environment_id": "env_1",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "agent": {"id": "agent_1"},
    },
}

#: Fields a test leaves out that a real record of the type always has.
_REQUIRED: dict[str, dict[str, object]] = {
    "user.message": {"content": [{"type": "text", "text": "hi"}]},
    "span.model_request_end": {"model_request_start_id": "sevt_start", "model_usage": {}},
    "session.status_idle": {"stop_reason": {"type": "end_turn"}},
    "agent.custom_tool_use": {"name": "lookup", "input": {}},
    "user.custom_tool_result": {"content": []},
}


def typed(record: dict[str, object]) -> SessionRecord:
    """The record as the folds take it: decoded into the contracts' union (as read from the log)."""
    return parse_session_record({**_REQUIRED.get(str(record["type"]), {}), **record})


def state_after(*records: dict[str, object]) -> SessionState:
    state = SessionState(session_id="sesn_1")
    for seq, record in enumerate([CREATED, *records], start=1):
        state.apply(typed(dict(record)), seq)
    return state


def event(kind: str, at: str = "2026-01-01T00:00:01Z", **fields: object) -> dict[str, object]:
    return {"type": kind, "id": f"sevt_{kind}", "processed_at": at, **fields}


def test_a_user_message_is_accepted_while_idle_or_running() -> None:
    check_client_append(state_after(), [{"type": "user.message"}])
    check_client_append(state_after(event("session.status_running")), [{"type": "user.message"}])


def test_clients_cannot_append_agent_events() -> None:
    with pytest.raises(ApiError) as err:
        check_client_append(state_after(), [{"type": "user.message"}, {"type": "agent.message"}])
    assert err.value.status == 400
    assert "events.1.type" in err.value.message


def test_an_archived_session_is_read_only() -> None:
    state = state_after({"type": "corral.session_archived", "archived_at": "2026-01-01T00:00:02Z"})
    with pytest.raises(ApiError) as err:
        check_client_append(state, [{"type": "user.message"}])
    assert err.value.status == 409


def test_the_harness_walks_idle_running_idle() -> None:
    check_harness_append(
        state_after(),
        [
            {"type": "session.status_running"},
            {"type": "span.model_request_start"},
            {"type": "agent.message"},
            {"type": "span.model_request_end"},
            {"type": "session.status_idle"},
        ],
    )


def test_the_harness_cannot_write_agent_events_to_an_idle_session() -> None:
    with pytest.raises(ApiError) as err:
        check_harness_append(state_after(), [{"type": "agent.message"}])
    assert err.value.status == 409
    assert err.value.error_code == "wrong_status"  # the harness decided on a fold behind the log


def test_a_status_step_the_sessions_status_does_not_allow_is_a_wrong_status_conflict() -> None:
    """What a harness that decided on a fold behind the log gets (``session.status_running`` again
    while the log already says running): the harness decides again from the log, it does not take it
    for a lost lease."""
    running = state_after(event("session.status_running"))
    with pytest.raises(ApiError) as err:
        check_harness_append(running, [{"type": "session.status_running"}])
    assert (err.value.status, err.value.error_code) == (409, "wrong_status")


def test_the_harness_records_compactions_while_running_only() -> None:
    running = state_after(event("session.status_running"))
    check_harness_append(running, [{"type": "agent.thread_context_compacted"}, {"type": "span.model_request_start"}])
    with pytest.raises(ApiError) as err:
        check_harness_append(state_after(), [{"type": "agent.thread_context_compacted"}])
    assert err.value.status == 409


def test_a_rescheduled_session_must_run_again_before_agent_events() -> None:
    running = state_after(event("session.status_running"))
    check_harness_append(running, [{"type": "session.status_rescheduled"}, {"type": "session.status_running"}])
    with pytest.raises(ApiError):
        check_harness_append(running, [{"type": "session.status_rescheduled"}, {"type": "agent.message"}])


def test_the_projection_accrues_active_seconds_only_while_running_and_sums_usage() -> None:
    row = SessionRow(session_id="sesn_1")
    records = [
        CREATED,
        event("user.message", "2026-01-01T00:00:01Z"),
        event("session.status_running", "2026-01-01T00:00:02Z"),
        event("span.model_request_end", "2026-01-01T00:00:03Z", model_usage={"input_tokens": 10, "output_tokens": 4}),
        event("session.status_idle", "2026-01-01T00:00:04.500Z"),
        event("session.status_running", "2026-01-01T00:01:00Z"),
        event("span.model_request_end", "2026-01-01T00:01:01Z", model_usage={"input_tokens": 1, "output_tokens": 1}),
    ]
    for seq, record in enumerate(records, start=1):
        row.apply(typed(dict(record)), seq)
    session = row.session(datetime(2026, 1, 1, 0, 1, 3, tzinfo=UTC))
    assert session["status"] == "running"
    assert session["usage"]["input_tokens"] == 11
    assert session["usage"]["output_tokens"] == 5
    assert session["usage"]["active_seconds"] == pytest.approx(2.5 + 3.0)
    assert session["stats"]["duration_seconds"] == pytest.approx(63.0)


def test_a_confirmation_must_answer_a_tool_use_that_asked_for_one() -> None:
    state = state_after(
        event("session.status_running"),
        {**event("agent.tool_use"), "id": "sevt_ask", "name": "bash", "input": {}, "evaluated_permission": "ask"},
        {**event("agent.tool_use"), "id": "sevt_allow", "name": "read", "input": {}, "evaluated_permission": "allow"},
    )
    check_client_append(state, [{"type": "user.tool_confirmation", "tool_use_id": "sevt_ask", "result": "allow"}])
    for bad in ("sevt_allow", "sevt_nope"):
        with pytest.raises(ApiError) as err:
            check_client_append(state, [{"type": "user.tool_confirmation", "tool_use_id": bad, "result": "allow"}])
        assert err.value.status == 400 and bad in err.value.message
    twice = {"type": "user.tool_confirmation", "tool_use_id": "sevt_ask", "result": "deny"}
    with pytest.raises(ApiError):
        check_client_append(state, [twice, twice])
    state.apply(typed({**event("user.tool_confirmation"), "tool_use_id": "sevt_ask", "result": "deny"}), 99)
    with pytest.raises(ApiError):
        check_client_append(state, [twice])


def test_a_custom_tool_result_must_answer_a_pending_custom_tool_use() -> None:
    state = state_after(
        event("session.status_running"),
        {**event("agent.custom_tool_use"), "id": "sevt_custom", "name": "lookup", "input": {}},
    )
    answer = {"type": "user.custom_tool_result", "custom_tool_use_id": "sevt_custom", "content": []}
    check_client_append(state, [answer])
    with pytest.raises(ApiError) as err:
        check_client_append(state, [{**answer, "custom_tool_use_id": "sevt_other"}])
    assert err.value.status == 400


def test_a_deny_message_needs_a_deny() -> None:
    state = state_after(
        event("session.status_running"),
        {**event("agent.tool_use"), "id": "sevt_ask", "name": "bash", "input": {}, "evaluated_permission": "ask"},
    )
    with pytest.raises(ApiError) as err:
        check_client_append(
            state,
            [{"type": "user.tool_confirmation", "tool_use_id": "sevt_ask", "result": "allow", "deny_message": "x"}],
        )
    assert "deny_message" in err.value.message


@pytest.mark.parametrize(
    ("kind", "mention"),
    [
        ("user.define_outcome", "outcomes"),
        ("system.message", "system messages"),
        ("user.tool_result", "user.tool_result is only for self_hosted"),
    ],
)
def test_client_events_for_features_not_built_yet_say_not_supported_yet(kind: str, mention: str) -> None:
    with pytest.raises(ApiError) as err:
        check_client_append(state_after(), [{"type": "user.message"}, {"type": kind}])
    assert (err.value.status, err.value.error_code) == (400, "feature_not_supported")
    assert err.value.message.startswith(f"events.1.type: {mention}")
    assert "not supported yet" in err.value.message


def test_a_model_retry_moves_running_to_rescheduling_and_back() -> None:
    check_harness_append(
        state_after(event("session.status_running")),
        [
            event("span.model_request_end"),
            event("session.error"),
            event("session.status_rescheduled"),
            event("session.status_running"),
            event("span.model_request_start"),
        ],
    )
    # an interrupt during the wait ends the turn straight from rescheduling
    rescheduling = state_after(event("session.status_running"), event("session.status_rescheduled"))
    check_harness_append(rescheduling, [event("session.status_idle")])
    with pytest.raises(ApiError):
        check_harness_append(rescheduling, [event("span.model_request_start")])


BUDGET_PAUSE = (
    event("session.status_running"),
    event("session.usage", usage={"list_cost": {"amount": "30", "currency": "USD"}}),
    event("session.status_idle", stop_reason={"type": "budget_reached"}),
)
LIMIT = {"type": "limit", "max_list_cost": {"amount": "100", "currency": "USD"}}


def test_the_harness_logs_usage_while_running() -> None:
    running = state_after(event("session.status_running"))
    check_harness_append(running, [{"type": "session.usage"}, {"type": "session.status_idle"}])


def test_a_session_paused_by_its_budget_takes_only_settling_events_until_the_budget_changes() -> None:
    paused = state_after(*BUDGET_PAUSE)
    assert paused.list_cost == 30  # what a new budget must exceed
    with pytest.raises(ApiError) as err:
        check_client_append(paused, [{"type": "user.message"}])
    assert err.value.status == 400
    assert "raise the budget or remove it" in err.value.message
    check_client_append(paused, [{"type": "user.interrupt"}])

    for update in (event("session.updated", budget=LIMIT), event("session.updated", budget=None)):
        check_client_append(state_after(*BUDGET_PAUSE, update), [{"type": "user.message"}])
    # a title change is not a budget change
    with pytest.raises(ApiError):
        check_client_append(state_after(*BUDGET_PAUSE, event("session.updated", title="t")), [{"type": "user.message"}])


def test_the_projection_shows_the_list_cost_of_the_newest_usage_event() -> None:
    row = SessionRow(session_id="sesn_1")
    for seq, record in enumerate([CREATED, *BUDGET_PAUSE], start=1):
        row.apply(typed(dict(record)), seq)
    session = row.session(datetime(2026, 1, 1, 0, 1, 3, tzinfo=UTC))
    assert session["usage"]["list_cost"] == {"amount": "30", "currency": "USD"}
    assert "list_cost" not in SessionRow(session_id="s", body={}).session(datetime(2026, 1, 1, tzinfo=UTC))["usage"]


def test_the_projection_counts_a_compaction_summary_in_the_usage() -> None:
    row = SessionRow(session_id="sesn_1")
    compacted = event(
        "agent.thread_context_compacted",
        corral_compaction={"cleared_tool_results": [], "summary_usage": {"input_tokens": 50, "output_tokens": 6}},
    )
    for seq, record in enumerate([CREATED, compacted, event("agent.thread_context_compacted")], start=1):
        row.apply(typed(dict(record)), seq)
    usage = row.session(datetime(2026, 1, 1, tzinfo=UTC))["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (50, 6)
