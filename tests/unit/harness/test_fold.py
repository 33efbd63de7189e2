"""The incremental fold (``SessionFold``, ``ConversationBuilder``) against a fold from scratch.

``reference_rebuild`` is the conversation rebuild the harness used when it read the whole log at
every step, kept here as the oracle: the incremental builder must produce the same conversation for
any log, cut anywhere, snapshotted and restored anywhere.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.contracts.rpc import LoggedEvent
from corral.harness import snapshots
from corral.harness.conversation import ConversationBuilder, Cut
from corral.harness.decide import decide, plan
from corral.harness.fold import FORMAT, SessionFold, decode
from corral.harness.messageblocks import ChatMessage, agent_blocks, merge, tool_use_block, user_blocks
from corral.harness.sessionlog import LogEntry, following
from corral.harness.toolanswers import Answers
from tests.unit.harness.fakes import SESSION_ID, FakeStore, StoreLog, agent_snapshot


@dataclass(frozen=True)
class Results:
    tool_use_ids: tuple[str, ...]


def reference_rebuild(events: Sequence[LoggedEvent]) -> list[ChatMessage]:
    """The conversation a model request should see, given the log in order.

    A ``span.model_request_start`` opens a request (and supersedes one still open: the harness that
    started it is gone, and the user messages held back so far were visible to the new request).
    User messages logged while a request is open are placed after its output (and after the results
    of the tools it called), when its ``span.model_request_end`` arrives, or at the end when it
    never does.
    """
    ordered: list[ChatMessage | Results] = []
    held_back: list[ChatMessage] = []
    unplaced: list[str] = []
    answers = Answers()
    open_request: str | None = None

    def place_results() -> None:
        if unplaced:
            ordered.append(Results(tuple(unplaced)))
            unplaced.clear()

    def release() -> None:
        place_results()
        ordered.extend(held_back)
        held_back.clear()

    for logged in events:
        event = logged.event
        kind = event.get("type")
        if kind == "user.message":
            content = user_blocks(event.get("content"))
            if content and open_request is not None:
                held_back.append({"role": "user", "content": content})
            elif content:
                place_results()
                ordered.append({"role": "user", "content": content})
        elif kind == "agent.message":
            content = agent_blocks(event.get("content"))
            if content:
                place_results()
                ordered.append({"role": "assistant", "content": content})
        elif kind in ("agent.tool_use", "agent.custom_tool_use"):
            block = tool_use_block(event)
            if block is not None and block["id"] not in unplaced:
                ordered.append({"role": "assistant", "content": [block]})
                unplaced.append(block["id"])
        elif kind in ("agent.tool_result", "user.custom_tool_result", "user.tool_confirmation"):
            answers.add(event)
        elif kind == "span.model_request_start":
            release()
            open_request = str(event.get("id"))
        elif kind == "span.model_request_end" and event.get("model_request_start_id") == open_request:
            release()
            open_request = None
    release()
    messages: list[ChatMessage] = []
    for item in ordered:
        if isinstance(item, Results):
            messages.append({"role": "user", "content": [answers.block(i) for i in item.tool_use_ids]})
        else:
            messages.append(item)
    return merge(messages)


# --- random logs -----------------------------------------------------------------------------------------
TOOL_IDS = st.sampled_from(["t1", "t2", "t3"])
START_IDS = st.sampled_from(["s1", "s2", "s3"])
TEXT = st.sampled_from(["hi", "", "  ", "more"])


def _event(kind: str, draw: Any) -> dict[str, Any]:
    if kind == "user.message":
        return {"type": kind, "content": [{"type": "text", "text": draw(TEXT)}]}
    if kind == "agent.message":
        return {"type": kind, "content": [{"type": "text", "text": draw(TEXT)}]}
    if kind == "agent.tool_use":
        permission = draw(st.sampled_from(["allow", "ask", "deny"]))
        return {"type": kind, "id": draw(TOOL_IDS), "name": "bash", "input": {}, "evaluated_permission": permission}
    if kind == "agent.custom_tool_use":
        return {"type": kind, "id": draw(TOOL_IDS), "name": "lookup", "input": {"q": "x"}}
    if kind == "agent.tool_result":
        return {"type": kind, "tool_use_id": draw(TOOL_IDS), "content": [{"type": "text", "text": "ok"}]}
    if kind == "user.custom_tool_result":
        return {"type": kind, "custom_tool_use_id": draw(TOOL_IDS), "content": [{"type": "text", "text": "42"}]}
    if kind == "user.tool_confirmation":
        return {"type": kind, "tool_use_id": draw(TOOL_IDS), "result": draw(st.sampled_from(["allow", "deny"]))}
    if kind == "span.model_request_start":
        return {"type": kind, "id": draw(START_IDS)}
    if kind == "span.model_request_end":
        return {"type": kind, "model_request_start_id": draw(START_IDS), "model_usage": {}, "is_error": False}
    if kind == "session.status_idle":
        return {"type": kind, "stop_reason": {"type": draw(st.sampled_from(["end_turn", "requires_action"]))}}
    if kind == "agent.thread_context_compacted":
        ids = st.sampled_from([f"sevt_{n}" for n in range(40)])
        details: dict[str, Any] = {"cleared_tool_results": draw(st.lists(ids, max_size=3))}
        if draw(st.booleans()):
            details.update(summarized_through=draw(ids), summary=draw(st.sampled_from(["S", "T"])))
        return {"type": kind, "corral_compaction": details}
    if kind == "session.error":
        error = {"type": draw(st.sampled_from(["tool_use_limit_reached_error", "model_overloaded_error"]))}
        return {"type": kind, "error": {**error, "message": "m", "retry_status": {"type": "terminal"}}}
    return {"type": kind}


KINDS = [
    "user.message",
    "agent.message",
    "agent.tool_use",
    "agent.custom_tool_use",
    "agent.tool_result",
    "user.custom_tool_result",
    "user.tool_confirmation",
    "span.model_request_start",
    "span.model_request_end",
    "session.status_running",
    "session.status_idle",
    "session.error",
    "user.interrupt",
    "agent.thread_context_compacted",
]


@st.composite
def logs(draw: Any) -> list[dict[str, Any]]:
    kinds = draw(st.lists(st.sampled_from(KINDS), max_size=40))
    events: list[dict[str, Any]] = []
    for n, kind in enumerate(kinds):
        event = _event(kind, draw)
        event.setdefault("id", f"sevt_{n}")
        details = event.get("corral_compaction")
        if details and events:  # mostly events before it, as a harness logs them
            earlier = st.sampled_from([*(e["id"] for e in events), "sevt_99"])
            details["cleared_tool_results"] = draw(st.lists(earlier, max_size=3))
            if "summarized_through" in details:
                details["summarized_through"] = draw(earlier)
        events.append(event)
    return events


SESSION = {
    "type": "session",
    "id": SESSION_ID,
    "status": "idle",
    "environment_id": "env_test",
    "agent": agent_snapshot(),
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
}


def records(events: Sequence[dict[str, Any]]) -> list[bytes]:
    created = {"type": "corral.session_created", "workspace_id": "wrkspc_test", "session": SESSION}
    return [json.dumps(created).encode(), *(json.dumps(e).encode() for e in events)]


def fold_of(data: Sequence[bytes], *, first_seq: int = 1, max_result_chars: int | None = None) -> SessionFold:
    return SessionFold.of((decode(first_seq + i, d) for i, d in enumerate(data)), max_result_chars=max_result_chars)


def with_compaction(
    prefix: list[dict[str, Any]],
    suffix: list[dict[str, Any]],
    pick: int,
    *,
    max_result_chars: int | None,
    summary: str = "S",
) -> tuple[SessionFold, list[bytes]]:
    """``prefix``, then a compaction record the compactor could have written for the conversation as
    it stood (``pick`` chooses the cut and how many results it clears), then ``suffix`` (its ids made
    distinct): the fold of ``prefix`` and the whole log's records."""
    before = fold_of(records(prefix), max_result_chars=max_result_chars)
    cuts = named_cuts(before)
    results = [event_id for event_id, _ in before.conversation.tool_results()]
    details: dict[str, Any] = {"cleared_tool_results": results[: pick % 3]}
    if cuts:
        details.update(summarized_through=cuts[pick % len(cuts)].through, summary=summary)
    record = {"type": "agent.thread_context_compacted", "id": "sevt_cmp", "corral_compaction": details}
    suffix = [{**e, "id": f"later_{e['id']}"} if e["id"].startswith("sevt_") else e for e in suffix]
    return before, records([*prefix, record, *suffix])


def named_cuts(fold: SessionFold) -> list[Cut]:
    """The cuts a compaction record can name: the first of each name. Event ids are unique in a real
    log, but the random logs reuse tool-use ids, and a record naming a cut names the first."""
    first: dict[str, Cut] = {}
    for cut in fold.conversation.cuts():
        first.setdefault(cut.through, cut)
    return list(first.values())


def restored(fold: SessionFold, *, max_result_chars: int | None) -> SessionFold:
    """``fold`` written to a snapshot and read back, as a harness taking the session over reads it."""
    value = snapshots.decode(SESSION_ID, snapshots.encode(SESSION_ID, fold), max_result_chars=max_result_chars)
    assert isinstance(value, SessionFold), value
    return value


def compacts(events: Sequence[dict[str, Any]]) -> bool:
    return any(e["type"] == "agent.thread_context_compacted" for e in events)


@settings(max_examples=400, deadline=None)
@given(
    events=logs(),
    cut=st.integers(min_value=0, max_value=41),
    peeks=st.lists(st.integers(0, 41), max_size=4),
    max_result_chars=st.sampled_from([None, 1]),
)
def test_a_fold_resumed_from_a_snapshot_anywhere_equals_the_fold_from_scratch(
    events: list[dict[str, Any]], cut: int, peeks: list[int], max_result_chars: int | None
) -> None:
    """Compaction records (clearings, summaries naming any event) and truncation included."""
    data = records(events)
    cut = min(cut, len(data))
    scratch = fold_of(data, max_result_chars=max_result_chars)

    head = fold_of(data[:cut], max_result_chars=max_result_chars)
    resumed = restored(head, max_result_chars=max_result_chars)
    for seq, record in enumerate(data[cut:], start=cut + 1):
        if seq in peeks:
            resumed.messages()  # asking for the conversation midway changes nothing
        resumed.apply(decode(seq, record))

    logged = [LoggedEvent(seq=i + 2, event=e) for i, e in enumerate(events)]
    assert resumed.state() == scratch.state()
    assert resumed.messages() == scratch.messages()
    if not compacts(events) and max_result_chars is None:
        assert scratch.messages() == reference_rebuild(logged)
    for owned in (False, True):
        assert plan(resumed.session, resumed.ledger, owned=owned, max_tool_uses=2) == decide(
            scratch.session, logged, owned=owned, max_tool_uses=2
        )


@settings(max_examples=200, deadline=None)
@given(events=logs())
def test_the_builder_fed_event_by_event_matches_the_rebuild_at_every_prefix(events: list[dict[str, Any]]) -> None:
    events = [e for e in events if e["type"] != "agent.thread_context_compacted"]
    builder = ConversationBuilder()
    logged = [LoggedEvent(seq=i + 1, event=e) for i, e in enumerate(events)]
    for n, event in enumerate(events):
        builder.apply(event)
        assert builder.messages() == reference_rebuild(logged[: n + 1])


def test_the_fold_carries_the_session_snapshot_and_its_changes() -> None:
    data = records([{"type": "session.status_running", "id": "r"}])
    data.append(
        json.dumps({"type": "session.updated", "id": "u", "title": "renamed", "agent": {"model": "m2"}}).encode()
    )
    data.append(json.dumps({"type": "corral.session_archived", "archived_at": "2026-01-02T00:00:00Z"}).encode())
    fold = fold_of(data)

    assert fold.created and fold.workspace_id == "wrkspc_test"
    assert fold.status == "running" and fold.environment_id == "env_test"
    assert fold.session["title"] == "renamed" and fold.session["agent"] == {"model": "m2"}
    assert fold.session["archived_at"] == "2026-01-02T00:00:00Z"
    assert fold.events == 2 and fold.last_seq == 4


def test_a_record_that_does_not_validate_is_folded_as_far_as_it_can_be_read() -> None:
    data = records([{"type": "user.message", "id": "u1", "content": "not a list"}])
    fold = fold_of(data)

    assert fold.last_seq == 2 and fold.events == 1
    assert fold.messages() == []


# --- resuming: which snapshots are trusted ------------------------------------------------------------------
def _store_with(events: Sequence[dict[str, Any]]) -> FakeStore:
    store = FakeStore()
    store.add(*events)
    return store


async def test_a_usable_snapshot_is_resumed_from() -> None:
    store = _store_with([{"type": "user.message", "id": "u1", "content": [{"type": "text", "text": "hi"}]}])
    fold = SessionFold.of(decode(e.seq, json.dumps(e.event).encode()) for e in store.log)
    await store.save(SESSION_ID, snapshots.encode(SESSION_ID, fold))

    resumed = await snapshots.resume(SESSION_ID, store, StoreLog(store))

    assert resumed.source == "snapshot"
    assert resumed.fold.state() == fold.state()


async def test_no_snapshot_or_one_of_another_format_or_session_means_folding_from_the_start() -> None:
    store = _store_with([])
    assert (await snapshots.resume(SESSION_ID, store, StoreLog(store))).source == "missing"

    fold = SessionFold.of(decode(e.seq, json.dumps(e.event).encode()) for e in store.log)
    value = json.loads(snapshots.encode(SESSION_ID, fold))
    await store.save(SESSION_ID, json.dumps({**value, "format": FORMAT + 1}).encode())
    resumed = await snapshots.resume(SESSION_ID, store, StoreLog(store))
    assert (resumed.source, resumed.fold.last_seq) == ("format", 0)

    await store.save(SESSION_ID, snapshots.encode("sesn_other", fold))
    assert (await snapshots.resume(SESSION_ID, store, StoreLog(store))).source == "unreadable"
    await store.save(SESSION_ID, b"{not json")
    assert (await snapshots.resume(SESSION_ID, store, StoreLog(store))).source == "unreadable"


async def test_a_snapshot_past_the_end_of_the_log_is_never_trusted() -> None:
    """As after a stream restore: the snapshot claims records the log does not hold."""
    longer = _store_with([{"type": "user.message", "id": f"u{n}", "content": []} for n in range(5)])
    fold = SessionFold.of(decode(e.seq, json.dumps(e.event).encode()) for e in longer.log)
    restored = _store_with([{"type": "user.message", "id": "u0", "content": []}])
    await restored.save(SESSION_ID, snapshots.encode(SESSION_ID, fold))

    resumed = await snapshots.resume(SESSION_ID, restored, StoreLog(restored))

    assert (resumed.source, resumed.fold.last_seq) == ("past_log_end", 0)


@settings(max_examples=300, deadline=None)
@given(
    prefix=logs(),
    suffix=logs(),
    pick=st.integers(min_value=0, max_value=40),
    cut=st.integers(min_value=0, max_value=42),
    max_result_chars=st.sampled_from([None, 1]),
)
def test_a_compaction_the_compactor_could_write_folds_the_same_from_a_snapshot_anywhere(
    prefix: list[dict[str, Any]], suffix: list[dict[str, Any]], pick: int, cut: int, max_result_chars: int | None
) -> None:
    """The record names a cut and results of the conversation as it stood (what ``Compactor`` does);
    the summary then heads the conversation, the messages before the cut are gone, and a fold
    resumed from a snapshot taken anywhere (before, at or after the record) is equal."""
    before, data = with_compaction(prefix, suffix, pick, max_result_chars=max_result_chars)
    cuts = named_cuts(before)
    scratch = fold_of(data, max_result_chars=max_result_chars)
    at_record = fold_of(data[: len(prefix) + 2], max_result_chars=max_result_chars)

    if cuts:
        chosen = cuts[pick % len(cuts)]
        first = at_record.messages()[0]
        assert first["role"] == "user" and "Summary:\n\nS" in first["content"][0]["text"]
        kept = before.conversation.state()["placed"][chosen.index :]
        placed = at_record.conversation.state()["placed"]
        assert [m["role"] for m in placed] == [m["role"] for m in kept], "the messages from the cut on are kept"
        assert not any(b["type"] == "tool_result" for b in placed[0]["content"]), "no result without its use"
    cut = min(cut, len(data))
    head = fold_of(data[:cut], max_result_chars=max_result_chars)
    resumed = restored(head, max_result_chars=max_result_chars)
    for seq, value in enumerate(data[cut:], start=cut + 1):
        resumed.apply(decode(seq, value))
    assert resumed.state() == scratch.state()
    assert resumed.messages() == scratch.messages()


def test_a_snapshot_taken_with_another_truncation_length_is_not_used() -> None:
    fold = fold_of(records([]), max_result_chars=1_000)
    data = snapshots.encode(SESSION_ID, fold)

    assert isinstance(snapshots.decode(SESSION_ID, data, max_result_chars=1_000), SessionFold)
    assert snapshots.decode(SESSION_ID, data, max_result_chars=2_000) == "format"


class HalfRecordAtTheTail:
    """A log whose last message is a part of a record a crashed writer never completed."""

    async def last_seq(self, session_id: str) -> int:
        return 3

    async def follow(self, session_id: str, after_seq: int) -> AsyncIterator[LogEntry]:
        for seq, data in enumerate(records([]), start=1):
            yield LogEntry(seq, data)
        yield LogEntry(2, json.dumps({"type": "user.message", "id": "u1", "content": []}).encode())
        yield LogEntry(3, None)
        await asyncio.Event().wait()

    async def holds(self, session_id: str, seq: int) -> bool:
        return seq <= 2


async def test_catching_up_passes_a_half_record_at_the_tail_without_folding_it() -> None:
    fold = SessionFold()
    async with following(HalfRecordAtTheTail(), SESSION_ID, fold, on_record=lambda _: None, reach_timeout_s=5) as log:
        await log.catch_up()

        assert (fold.last_seq, log.position) == (2, 3)


class StuckSnapshots:
    """An object store read that never completes (as one waiting on chunks that never come)."""

    async def load(self, session_id: str) -> bytes | None:
        await asyncio.Event().wait()
        return None

    async def save(self, session_id: str, data: bytes) -> None:
        return None


async def test_a_snapshot_read_that_hangs_costs_a_fold_from_the_start_never_the_session() -> None:
    store = _store_with([])

    resumed = await snapshots.resume(SESSION_ID, StuckSnapshots(), StoreLog(store), load_timeout_s=0.05)

    assert (resumed.source, resumed.fold.last_seq) == ("unreadable", 0)


async def test_a_log_read_that_swallows_its_cancellation_is_cancelled_again() -> None:
    """nats-py's ``wait_for`` on Python 3.11 can drop a cancellation; the run must not hang on it."""
    from corral.harness import sessionlog

    started, swallowed = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # the lost cancellation: carry on following
        await asyncio.Event().wait()

    reader = asyncio.create_task(stubborn())
    await started.wait()
    async with asyncio.timeout(5):
        await sessionlog.stop_reading(reader)
    assert swallowed.is_set() and reader.cancelled()
