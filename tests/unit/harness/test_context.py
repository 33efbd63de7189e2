"""Context management: compaction applied by the fold, what compaction chooses from what the fold
keeps, and the driver's use of it."""

from __future__ import annotations

import json
from typing import Any

from corral.contracts import rpc
from corral.contracts.api.events import ModelUsage
from corral.harness.compaction import Compactor, ContextPolicy
from corral.harness.context import (
    SUMMARY_SYSTEM,
    compaction_details,
    context_window,
    plan_clearing,
    prompt_too_long,
    summary_cut,
)
from corral.harness.conversation import COMPACTED, ConversationBuilder, rebuild, summary_text
from corral.harness.events import wire
from corral.harness.model import ModelError, ModelRequest, Summary
from corral.harness.retry import RetryPolicy
from corral.harness.toolanswers import cleared_note, truncated_note
from corral.harness.turn import SessionDriver
from tests.unit.harness.fakes import (
    SESSION_ID,
    FakeDeltas,
    FakeModel,
    FakeStore,
    RecordingSleep,
    Reply,
    StoreLog,
    agent,
    end,
    held_lease,
    idle,
    logged,
    running,
    start,
    tool_result,
    tool_use,
    user,
)

BIG = "x" * 2_000


def compaction(id: str = "cmp", **details: Any) -> dict[str, Any]:
    return {"type": COMPACTED, "id": id, "corral_compaction": compaction_details(**details)}


def view(log: list[rpc.LoggedEvent], *, max_result_chars: int | None = None) -> list[Any]:
    return rebuild(log, max_result_chars=max_result_chars)


def builder(log: list[rpc.LoggedEvent], *, max_result_chars: int | None = None) -> ConversationBuilder:
    built = ConversationBuilder(max_result_chars=max_result_chars)
    for entry in log:
        built.apply(entry.event)
    return built


def texts(messages: list[Any]) -> list[tuple[str, list[str]]]:
    out = []
    for message in messages:
        blocks = []
        for block in message["content"]:
            if block["type"] == "tool_result":
                blocks.append("result:" + "".join(b["text"] for b in block.get("content", [])))
            else:
                blocks.append(block.get("text", block["type"]))
        out.append((message["role"], blocks))
    return out


def tool_turn(n: int, output: str = BIG) -> list[dict[str, Any]]:
    """A model reply calling bash once, and its result (ids ``t<n>`` / ``res-t<n>``)."""
    return [start(f"s{n}"), tool_use(f"t{n}"), end(f"s{n}"), tool_result(f"t{n}", output)]


# --- the fold applies compactions ---------------------------------------------------------------------


def test_a_cleared_result_shows_a_note_naming_its_event_and_the_log_keeps_it_whole() -> None:
    log = logged(user("go"), *tool_turn(1), *tool_turn(2), compaction(cleared=["res-t1"]))

    shown = texts(view(log))

    assert shown[2] == ("user", ["result:" + cleared_note("res-t1")])
    assert "res-t1" in cleared_note("res-t1") and "session log" in cleared_note("res-t1")
    assert shown[4] == ("user", ["result:" + BIG]), "results not named stay whole"
    assert log[4].event["content"][0]["text"] == BIG, "the log is not changed"


def test_a_result_over_the_limit_is_truncated_with_a_note_and_a_short_one_is_not() -> None:
    log = logged(user("go"), *tool_turn(1, "y" * 5_000), *tool_turn(2, "short"))

    shown = texts(view(log, max_result_chars=1_000))

    assert shown[2] == ("user", ["result:" + "y" * 1_000 + "\n" + truncated_note("res-t1", 1_000, 5_000)])
    assert shown[4] == ("user", ["result:short"])
    assert texts(view(log)) != shown, "without a limit nothing is truncated"


LONG = [
    user("first", id="u1"), running(), start("s1"), agent("one", id="a1"), end("s1"), idle(),
    user("second", id="u2"), {**running(), "id": "r2"}, start("s2"), agent("two", id="a2"), end("s2"),
    {**idle(), "id": "idle2"}, user("third", id="u3"),
]  # fmt: skip


def test_the_cuts_are_turn_starts_named_by_the_event_before_them() -> None:
    cuts = builder(logged(*LONG)).cuts()

    assert [(c.index, c.through) for c in cuts] == [(1, "s1"), (2, "idle"), (3, "s2"), (4, "idle2")]
    assert [c.kept_chars for c in cuts] == sorted((c.kept_chars for c in cuts), reverse=True)


def test_a_summary_replaces_the_messages_before_the_cut_it_names() -> None:
    log = logged(*LONG, compaction(through="idle2", summary="they said first and second"))

    assert texts(view(log)) == [("user", [summary_text("they said first and second", "idle2"), "third"])]


def test_a_summary_naming_no_cut_changes_nothing() -> None:
    plain = view(logged(*LONG))

    assert view(logged(*LONG, compaction(through="a2", summary="S"))) == plain, "a2 starts no turn"
    assert view(logged(*LONG, compaction(through="nowhere", summary="S"))) == plain


def test_the_conversation_is_the_same_for_any_harness_reading_the_log_later() -> None:
    before = [user("go", id="u1"), *tool_turn(1), *tool_turn(2), agent("done", id="a1"), user("more", id="u2")]
    cut = builder(logged(*before)).cuts()[-1]
    record = compaction(cleared=["res-t1"], through=cut.through, summary="S")
    log = logged(*before, record)
    # a crash after the compaction: the next holder's log has more statuses and spans, no new input
    rescheduled = {"type": "session.status_rescheduled", "id": "r"}
    again = [start("s9"), rescheduled, running(), end("s9"), start("s10")]
    later = logged(*before, record, *again)

    assert view(log) == view(later)
    assert texts(view(log)) == [("user", [summary_text("S", cut.through), "more"])]


def test_the_newest_summary_wins_and_clearings_add_up() -> None:
    log = logged(
        user("a", id="u1"), agent("b", id="a1"), user("c", id="u2"), compaction("c1", through="a1", summary="old"),
        *tool_turn(1), *tool_turn(2), compaction("c2", cleared=["res-t1"]),
        agent("d", id="a2"), compaction("c3", cleared=["res-t2"], through="c2", summary="new"), user("e", id="u3"),
    )  # fmt: skip

    shown = texts(view(log))

    assert shown == [("user", [summary_text("new", "c2")]), ("assistant", ["d"]), ("user", ["e"])]
    assert texts(view(log[:13])) == [
        ("user", [summary_text("old", "a1"), "c"]),
        ("assistant", ["tool_use"]),
        ("user", ["result:" + cleared_note("res-t1")]),
        ("assistant", ["tool_use"]),
        ("user", ["result:" + BIG]),
    ]


# --- planning -----------------------------------------------------------------------------------------


def test_clearing_goes_oldest_first_keeps_the_newest_and_stops_when_enough_is_saved() -> None:
    log = logged(user("go"), *tool_turn(1), *tool_turn(2, "tiny"), *tool_turn(3), *tool_turn(4), *tool_turn(5))
    results = builder(log).tool_results()

    assert plan_clearing(results, excess_chars=1, keep=2) == ["res-t1"]
    assert plan_clearing(results, excess_chars=3_000, keep=2) == ["res-t1", "res-t3"]
    assert plan_clearing(results, excess_chars=10**9, keep=2) == ["res-t1", "res-t3"], (
        "the two newest are kept and a tiny result is not worth a note"
    )
    assert plan_clearing(results, excess_chars=10**9, keep=0) == ["res-t1", "res-t3", "res-t4", "res-t5"]


def test_clearing_skips_results_already_cleared() -> None:
    log = logged(user("go"), *tool_turn(1), *tool_turn(2), *tool_turn(3), compaction(cleared=["res-t1"]))

    assert plan_clearing(builder(log).tool_results(), excess_chars=10**9, keep=1) == ["res-t2"]


def test_a_summary_cut_never_separates_a_tool_use_from_its_result() -> None:
    log = logged(user("go", id="u1"), tool_use("t1"), user("meanwhile", id="u2"), tool_result("t1", BIG),
                 agent("done", id="a1"))  # fmt: skip

    cuts = builder(log).cuts()

    assert [(c.index, c.through) for c in cuts] == [(1, "u1"), (3, "res-t1")], (
        "t1's result went out with the message after it (u2): no cut between them"
    )
    assert texts(view(logged(*[e.event for e in log], compaction(through="u1", summary="S")))) == [
        ("user", [summary_text("S", "u1")]),
        ("assistant", ["tool_use"]),
        ("user", ["result:" + BIG, "meanwhile"]),
        ("assistant", ["done"]),
    ]
    assert texts(view(logged(*[e.event for e in log], compaction(through="res-t1", summary="S")))) == [
        ("user", [summary_text("S", "res-t1")]),
        ("assistant", ["done"]),
    ]


def test_the_cut_keeps_as_much_as_fits_and_nothing_is_left_when_there_is_no_clean_cut() -> None:
    log = logged(user(BIG, id="u1"), agent(BIG, id="a1"), user("short", id="u2"), agent("ok", id="a2"))
    cuts = builder(log).cuts()

    assert summary_cut(cuts, keep_chars=100) == cuts[1]
    assert summary_cut(cuts, keep_chars=10_000) == cuts[0]
    assert summary_cut(builder(logged(user("only"))).cuts(), keep_chars=0) is None


def test_the_context_window_comes_from_the_table_the_default_or_the_override() -> None:
    assert context_window("claude-sonnet-4-6") == 200_000
    assert context_window("some-other-model") == 200_000
    assert context_window("claude-sonnet-4-6", 50_000) == 50_000


def test_the_real_apis_prompt_too_long_message_is_recognised() -> None:
    message = "The model API answered 400 invalid_request_error: prompt is too long: 210345 tokens > 200000 maximum"
    assert prompt_too_long(message) == 200_000
    assert prompt_too_long("The model API answered 400 invalid_request_error: max_tokens: Field required") is None


# --- the compactor ----------------------------------------------------------------------------------------


class CountingModel:
    """Counts tokens as characters / 4 of the messages' JSON; summarises by saying how much it read."""

    def __init__(self, *, counts: bool = True, refuse_over: int | None = None) -> None:
        self.counts = counts
        self.refuse_over = refuse_over
        self.summaries: list[ModelRequest] = []

    async def count_tokens(self, request: ModelRequest) -> int | None:
        return len(json.dumps(request.messages)) // 4 if self.counts else None

    async def summarise(self, request: ModelRequest) -> Summary:
        self.summaries.append(request)
        size = len(request.messages[0]["content"][0]["text"])
        if self.refuse_over is not None and size > self.refuse_over * 4:
            raise ModelError(
                "model_request_failed_error",
                f"The model API answered 400 invalid_request_error: prompt is too long: {size // 4} tokens > "
                f"{self.refuse_over} maximum",
                retryable=False,
            )
        return Summary(f"summary of {size} characters", ModelUsage(input_tokens=size // 4, output_tokens=9))


def base_request() -> ModelRequest:
    return ModelRequest(model="claude-test", messages=[], max_tokens=256, system="be brief")


def policy(window: int, **more: Any) -> ContextPolicy:
    return ContextPolicy(window_tokens=window, threshold=0.8, keep_tool_results=1, **more)


async def test_under_the_threshold_nothing_is_compacted() -> None:
    log = logged(user("hello"))
    prepared = await Compactor(CountingModel(), policy(10_000)).prepare(base_request(), builder(log))

    assert prepared.events == () and not prepared.exhausted
    assert prepared.request.messages == view(log)


async def test_over_the_threshold_old_results_are_cleared_first_and_the_request_is_the_logs_view() -> None:
    log = logged(user("go", id="u1"), *tool_turn(1), *tool_turn(2), *tool_turn(3))
    model = CountingModel()

    prepared = await Compactor(model, policy(1_800)).prepare(base_request(), builder(log))

    (event,) = [wire(e) for e in prepared.events]
    assert event["type"] == COMPACTED
    assert event["corral_compaction"]["cleared_tool_results"] == ["res-t1"], "the oldest, and it was enough"
    assert "summary" not in event["corral_compaction"] and not model.summaries
    assert prepared.tokens <= 1_440
    assert prepared.request.messages == view([*log, rpc.LoggedEvent(seq=99, event=event)]), (
        "what is sent is what any harness rebuilds from the log with the event"
    )


async def test_when_clearing_is_not_enough_older_turns_are_summarised_in_a_separate_context() -> None:
    log = logged(
        user(BIG, id="u1"), agent(BIG, id="a1"), user(BIG, id="u2"), agent(BIG, id="a2"), user("now?", id="u3")
    )
    model = CountingModel()

    prepared = await Compactor(model, policy(1_500)).prepare(base_request(), builder(log))

    (event,) = [wire(e) for e in prepared.events]
    details = event["corral_compaction"]
    assert details["summarized_through"] == "u2" and details["summary"].startswith("summary of")
    (summary_request,) = model.summaries
    assert summary_request.system == SUMMARY_SYSTEM and summary_request.tools == ()
    size = len(summary_request.messages[0]["content"][0]["text"])
    assert details["summary_usage"]["input_tokens"] == size // 4, "the summary's usage is recorded"
    assert details["summary_usage"]["output_tokens"] == 9
    assert BIG[:100] in summary_request.messages[0]["content"][0]["text"]
    assert texts(prepared.request.messages) == [
        ("user", [summary_text(details["summary"], "u2")]),
        ("assistant", [BIG]),
        ("user", ["now?"]),
    ], "the newest turns that fit are kept verbatim"
    assert prepared.request.messages == view([*log, rpc.LoggedEvent(seq=99, event=event)])


async def test_a_summary_request_that_is_too_long_is_clipped_and_asked_again() -> None:
    log = logged(user(BIG * 3, id="u1"), agent(BIG * 3, id="a1"), user("now?", id="u2"))
    model = CountingModel(refuse_over=300)

    prepared = await Compactor(model, policy(2_000)).prepare(base_request(), builder(log))

    assert len(model.summaries) >= 2
    assert wire(prepared.events[0])["corral_compaction"]["summarized_through"] == "a1"


async def test_a_harder_level_with_nothing_left_to_compact_is_exhausted() -> None:
    log = logged(user(BIG * 5, id="u1"))
    compactor = Compactor(CountingModel(), policy(1_000))

    assert not (await compactor.prepare(base_request(), builder(log))).exhausted, (
        "level 0 sends it anyway: the API decides"
    )
    assert (await compactor.prepare(base_request(), builder(log), level=1)).exhausted


async def test_without_count_tokens_the_estimate_is_used_and_count_tokens_calibrates_it() -> None:
    log = logged(user(BIG * 4))
    estimated = Compactor(CountingModel(counts=False), policy(100_000))
    counted = Compactor(CountingModel(), policy(5_000))

    assert (await estimated.prepare(base_request(), builder(log))).tokens == estimated.estimator.tokens(
        len(json.dumps(view(log))) + len("be brief")
    )
    await counted.prepare(base_request(), builder(log))
    assert counted.estimator.chars_per_token > 3.5, "calibrated towards the counted 4 characters a token"


# --- the driver ---------------------------------------------------------------------------------------------


def too_long(maximum: int) -> ModelError:
    return ModelError(
        "model_request_failed_error",
        f"The model API answered 400 invalid_request_error: prompt is too long: {maximum + 10} tokens > {maximum} "
        "maximum",
        retryable=False,
    )


def context_driver(store: FakeStore, model: FakeModel, window: int = 100_000) -> SessionDriver:
    return SessionDriver(
        store=store,
        log=StoreLog(store),
        environments=store,
        snapshots=store,
        model=model,
        deltas=FakeDeltas(),
        policy=RetryPolicy(max_retries=3, backoff_s=1.0, max_backoff_s=30.0),
        max_tokens=256,
        sleep=RecordingSleep(),
        compactor=Compactor(CountingModel(), policy(window)),
    )


async def test_prompt_too_long_compacts_to_the_named_maximum_and_asks_again() -> None:
    store = FakeStore()
    store.add(user(BIG, id="u1"), agent(BIG, id="a1"), user(BIG, id="u2"), agent(BIG, id="a2"), user("now?", id="u3"))
    model = FakeModel(too_long(1_200), Reply(["fine"]))

    await context_driver(store, model).run(SESSION_ID, held_lease())

    types = [e.event["type"] for e in store.events[5:]]
    assert types == [
        "session.status_running", "span.model_request_start", "span.model_request_end",
        "span.model_request_start", COMPACTED, "agent.message", "span.model_request_end", "session.status_idle",
    ]  # fmt: skip
    first, second = model.requests
    compacted_at = next(i for i, e in enumerate(store.events) if e.event["type"] == COMPACTED)
    assert second.messages == view(store.events[: compacted_at + 1]) and second.messages != first.messages
    assert "session.error" not in types, "a compaction that worked is not an error"


async def test_when_nothing_more_can_be_compacted_the_turn_ends_with_compaction_limit_reached() -> None:
    store = FakeStore()
    store.add(user(BIG * 5, id="u1"))
    model = FakeModel(too_long(100), too_long(100))

    await context_driver(store, model).run(SESSION_ID, held_lease())

    tail = [e.event for e in store.events[-3:]]
    assert [e["type"] for e in tail] == ["span.model_request_end", "session.error", "session.status_idle"]
    assert tail[1]["error"]["type"] == "compaction_limit_reached_error"
    assert tail[1]["error"]["retry_status"] == {"type": "exhausted"}
    assert tail[2]["stop_reason"] == {"type": "retries_exhausted"}
    assert len(model.requests) == 2


async def test_a_short_conversation_is_sent_as_rebuilt_and_nothing_is_appended_for_it() -> None:
    store = FakeStore()
    store.add(user("hi"))
    model = FakeModel(Reply(["hello"]))
    driver = context_driver(store, model)

    await driver.run(SESSION_ID, held_lease())

    assert model.requests[0].messages == rebuild(store.events[:1])
    assert COMPACTED not in [e.event["type"] for e in store.log]


class TallyingModel(CountingModel):
    def __init__(self) -> None:
        super().__init__()
        self.counts_asked = 0

    async def count_tokens(self, request: ModelRequest) -> int | None:
        self.counts_asked += 1
        return await super().count_tokens(request)


async def test_a_counted_conversation_is_counted_again_only_once_it_may_no_longer_fit() -> None:
    """Counting is a request the size of the conversation: a conversation that only grew is not
    counted again while the last count plus every character added since is within the budget, and
    every step decides as a count at every step would."""
    model, every_time = TallyingModel(), CountingModel()
    compactor = Compactor(model, policy(2_000))  # budget 1,600 tokens; counted from 800 estimated
    conversation = builder(logged(user("x" * 3_200, id="u0")))

    async def step(text: str, n: int) -> None:
        conversation.apply(agent(text, id=f"a{n}"))
        conversation.apply(user(text, id=f"u{n}"))
        prepared = await compactor.prepare(base_request(), conversation)
        fresh = conversation.copy()  # never counted: counts now
        exact = await Compactor(every_time, policy(2_000)).prepare(base_request(), fresh)
        decided = [
            (
                wire(e)["corral_compaction"]["cleared_tool_results"],
                wire(e)["corral_compaction"].get("summarized_through"),
            )
            for e in prepared.events
        ]
        assert decided == [
            (
                wire(e)["corral_compaction"]["cleared_tool_results"],
                wire(e)["corral_compaction"].get("summarized_through"),
            )
            for e in exact.events
        ]
        if not prepared.events:
            assert prepared.request == exact.request

    await step("first", 1)
    assert model.counts_asked == 1
    for n in range(2, 6):
        await step(f"s{n}", n)
    assert model.counts_asked == 1, "grown by a few hundred characters: surely still fits"
    await step("y" * 2_000, 12)
    assert model.counts_asked >= 2, "may no longer fit: counted again"
