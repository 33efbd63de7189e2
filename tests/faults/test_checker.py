"""The checker on hand-made histories: a clean run is valid, and each invariant's violation is found
(and reported under that invariant alone)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.faults.checker import INVARIANTS, WORKSPACE_LOST, LogEvent, Observation, Row, check, marker
from tests.faults.history import History

S = "sesn_a"
MARK = marker("tok", 0, 0)


def ev(seq: int, event_id: str, kind: str, **body: Any) -> LogEvent:
    return LogEvent(seq, event_id, kind, body)


def clean_log() -> list[LogEvent]:
    return [
        ev(1, "sevt_u", "user.message", content=[{"type": "text", "text": "tok: turn 0"}]),
        ev(2, "sevt_run", "session.status_running"),
        ev(3, "sevt_use", "agent.tool_use", input={"command": f"echo {MARK} >> runs.txt"}),
        ev(4, "sevt_res", "agent.tool_result", tool_use_id="sevt_use"),
        ev(5, "sevt_msg", "agent.message", content=[{"type": "text", "text": "done"}]),
        ev(6, "sevt_idle", "session.status_idle", stop_reason={"type": "end_turn"}),
    ]


def row(log: list[LogEvent], status: str = "idle") -> Row:
    return Row(status, log[-1].seq, (10, 5), {"title": None}, tuple((e.seq, e.id) for e in log))


def clean() -> tuple[History, Observation]:
    history = History()
    send = history.invoke("c1", "send", session=S, text="tok: turn 0")
    history.ok(send, event_id="sevt_u")
    read = history.invoke("c1", "read", session=S)
    history.ok(read, event_ids=["sevt_u", "sevt_run"])
    log = clean_log()
    seen = Observation({S: log}, {S: row(log)}, {S: row(log)}, {S: None}, [MARK])
    return history, seen


def broken(verdict_of: tuple[History, Observation]) -> set[str]:
    verdict = check(*verdict_of)
    return {v.invariant for v in verdict.violations}


def test_a_clean_run_is_valid_and_counted() -> None:
    verdict = check(*clean())
    assert verdict.ok, verdict.summary()
    assert verdict.counts["sends_ok"] == 1 and verdict.counts["turns_ended"] == 1
    assert verdict.counts["tool_calls"] == 1 and verdict.counts["tool_runs"] == 1
    assert verdict.summary().startswith("valid")


def test_an_acknowledged_append_missing_from_the_log_is_lost() -> None:
    history, seen = clean()
    history.ok(history.invoke("c2", "send", session=S, text="tok: turn 1"), event_id="sevt_gone")
    assert broken((history, seen)) == {"lost"}


def test_an_event_once_read_and_then_gone_is_lost_and_breaks_the_order() -> None:
    history, seen = clean()
    history.ok(history.invoke("c1", "read", session=S), event_ids=["sevt_u", "sevt_vanished"])
    assert broken((history, seen)) == {"lost", "order"}


def test_an_unknown_send_that_never_landed_is_not_lost() -> None:
    history, seen = clean()
    history.unknown(history.invoke("c1", "send", session=S, text="tok: turn 1"), error="timeout")
    assert check(history, seen).ok


def test_an_event_id_twice_is_duplicated() -> None:
    history, seen = clean()
    log = [*seen.log[S], ev(7, "sevt_idle", "session.status_idle", stop_reason={"type": "end_turn"})]
    seen = dataclasses.replace(seen, log={S: log}, projected={S: row(log)}, folded={S: row(log)})
    assert broken((history, seen)) == {"duplicated"}


def test_a_retried_send_stored_twice_is_duplicated() -> None:
    history, seen = clean()
    again = [dataclasses.replace(e, seq=e.seq + 6, id=e.id + "2") for e in clean_log()]
    again[2] = dataclasses.replace(again[2], body={"input": {"command": "true"}})
    again[3] = dataclasses.replace(again[3], body={"tool_use_id": "sevt_use2"})
    log = [*seen.log[S], *again]
    seen = dataclasses.replace(seen, log={S: log}, projected={S: row(log)}, folded={S: row(log)})
    verdict = check(history, seen)
    assert {v.invariant for v in verdict.violations} == {"duplicated"}
    assert "tok: turn 0" in verdict.of("duplicated")[0].detail


def test_sequence_numbers_going_backwards_break_the_order() -> None:
    history, seen = clean()
    log = seen.log[S]
    log[2], log[3] = dataclasses.replace(log[2], seq=4), dataclasses.replace(log[3], seq=3)
    assert "order" in broken((history, seen))


def test_two_clients_reading_two_orders_break_the_order() -> None:
    history, seen = clean()
    history.ok(history.invoke("c2", "read", session=S), event_ids=["sevt_run", "sevt_u"])
    assert broken((history, seen)) == {"order"}


def test_a_tool_answered_twice_or_before_it_was_called_breaks_the_order() -> None:
    history, seen = clean()
    twice = [*seen.log[S][:4], ev(5, "sevt_res2", "agent.tool_result", tool_use_id="sevt_use"), *seen.log[S][4:]]
    twice = [dataclasses.replace(e, seq=i + 1) for i, e in enumerate(twice)]
    seen = dataclasses.replace(seen, log={S: twice}, projected={S: row(twice)}, folded={S: row(twice)})
    assert broken((history, seen)) == {"order"}
    early = [seen.log[S][0], ev(2, "sevt_res", "agent.tool_result", tool_use_id="sevt_later")]
    seen = dataclasses.replace(seen, log={S: early + twice[5:]})
    assert "order" in broken((history, seen))


def test_a_turn_without_an_end_is_reported_and_one_with_a_session_error_is_not() -> None:
    history, seen = clean()
    cut = seen.log[S][:5]
    seen = dataclasses.replace(seen, log={S: cut}, projected={S: row(cut)}, folded={S: row(cut)})
    assert broken((history, seen)) == {"turns"}
    errored = [*cut, ev(6, "sevt_err", "session.error", error={"type": "model_overloaded_error"})]
    seen = dataclasses.replace(seen, log={S: errored}, projected={S: row(errored)}, folded={S: row(errored)})
    assert check(history, seen).ok


def test_a_tool_call_run_twice_in_the_sandbox_breaks_effect_once() -> None:
    history, seen = clean()
    seen.sandbox_lines.append(MARK)
    verdict = check(history, seen)
    assert {v.invariant for v in verdict.violations} == {"effect_once"}
    assert MARK in verdict.violations[0].detail


def with_second_call(result: dict[str, Any]) -> tuple[History, Observation]:
    """The clean run with a second scripted call (its marker not in the sandbox) answered ``result``."""
    history, seen = clean()
    second = marker("tok", 1, 0)
    log = [
        *clean_log()[:4],
        ev(5, "sevt_use2", "agent.tool_use", input={"command": f"echo {second} >> runs.txt"}),
        ev(6, "sevt_res2", "agent.tool_result", tool_use_id="sevt_use2", **result),
        *(dataclasses.replace(e, seq=e.seq + 2) for e in clean_log()[4:]),
    ]
    return history, dataclasses.replace(seen, log={S: log}, projected={S: row(log)}, folded={S: row(log)})


def test_a_call_that_ran_and_whose_effect_is_gone_from_the_sandbox_breaks_kept() -> None:
    """A sandbox replaced without a word: the workspace a call wrote to is not the session's any more."""
    verdict = check(*with_second_call({"is_error": False, "content": [{"type": "text", "text": "(no output)"}]}))
    assert {v.invariant for v in verdict.violations} == {"kept"}
    assert marker("tok", 1, 0) in verdict.violations[0].detail


def test_a_call_answered_with_an_error_may_have_left_nothing() -> None:
    unavailable = [
        {
            "type": "text",
            "text": "The sandbox is unavailable: no sandbox-manager is running and none "
            "came back within 30 s, so the tool did not run.",
        }
    ]
    verdict = check(*with_second_call({"is_error": True, "content": unavailable}))
    assert verdict.ok, verdict.summary()
    assert verdict.counts["tool_errors"] == 1 and verdict.counts["tool_runs"] == 1


def test_effects_before_a_workspace_announced_lost_need_not_be_kept() -> None:
    """The first call's marker is gone, and the second call's result said the workspace was lost."""
    notice = "The previous sandbox of this session stopped unexpectedly; this is a new sandbox, and files in "
    history, seen = with_second_call({"content": [{"type": "text", "text": notice + "/workspace were lost."}]})
    seen.sandbox_lines[:] = [marker("tok", 1, 0)]
    assert check(history, seen).ok, check(history, seen).summary()
    seen.sandbox_lines[:] = [MARK]  # the call after the announcement ran in the new sandbox: its effect is kept
    assert broken((history, seen)) == {"kept"}


def test_the_sandbox_managers_loss_messages_say_what_kept_looks_for() -> None:
    from corral.sandbox_manager.executions import SANDBOX_LOST, SANDBOX_REMOVED
    from corral.sandbox_manager.reaper import LOST_WHILE_DOWN
    from corral.sandbox_manager.sessions import LOST_WHILE_UNUSED, REMOVED_WHILE_UNUSED

    for message in (SANDBOX_LOST, SANDBOX_REMOVED, LOST_WHILE_DOWN, LOST_WHILE_UNUSED, REMOVED_WHILE_UNUSED):
        assert WORKSPACE_LOST in message


def test_a_running_session_without_a_lease_holder_is_stuck() -> None:
    history, seen = clean()
    seen.folded[S] = dataclasses.replace(seen.folded[S], status="running")
    seen.projected[S] = seen.folded[S]
    assert broken((history, seen)) == {"stuck"}
    seen.leases[S] = "harness-2"  # a holder is working on it
    assert check(history, seen).ok


@pytest.mark.parametrize("field", ["status", "last_seq", "usage", "body", "events"])
def test_a_projection_that_differs_from_the_fold_is_reported(field: str) -> None:
    history, seen = clean()
    other: dict[str, Any] = {"status": "running", "last_seq": 5, "usage": (10, 6), "body": {"title": "x"}, "events": ()}
    seen.projected[S] = dataclasses.replace(seen.projected[S], **{field: other[field]})
    verdict = check(history, seen)
    assert {v.invariant for v in verdict.violations} == {"projection"}
    assert verdict.violations[0].detail.startswith(field)


def test_a_session_projected_but_not_in_the_log_is_reported() -> None:
    history, seen = clean()
    seen.projected["sesn_ghost"] = seen.projected[S]
    assert broken((history, seen)) == {"projection"}


def test_the_summary_names_every_broken_invariant() -> None:
    history, seen = clean()
    seen.sandbox_lines.append(MARK)
    seen.leases.clear()
    seen.folded[S] = dataclasses.replace(seen.folded[S], status="running")
    summary = check(history, seen).summary()
    assert summary.startswith("INVALID") and "effect_once" in summary and "stuck" in summary
    assert set(INVARIANTS) >= {"effect_once", "stuck", "projection"}


def test_a_completion_is_recorded_once() -> None:
    history = History()
    pending = history.invoke("c1", "send", session=S)
    history.ok(pending, event_id="sevt_u")
    with pytest.raises(ValueError, match="already completed"):
        history.unknown(pending)


def test_recovery_counts_only_a_turn_that_matches() -> None:
    history = History()
    moment = history.now()
    failed = history.invoke("client-0", "turn", session=S)
    history.ok(failed, stop_reason="end_turn", tool_errors=1)
    ran = history.invoke("client-0", "turn", session=S)
    done = history.ok(ran, stop_reason="end_turn", tool_errors=0)
    assert history.first_ok_after(moment, "turn") is not None
    assert (
        history.first_ok_after(moment, "turn", where=lambda op: not op.value.get("tool_errors")) == done.time - moment
    )
