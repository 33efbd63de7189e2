"""A session's next run on the same harness starts from the fold its last run kept, not from the
session's snapshot (reading and decoding a snapshot costs more the longer the session), unless the
log moved on too far or no longer holds the kept fold's last record."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from corral.harness.conversation import rebuild
from corral.harness.model import ModelReply, ModelRequest, TextSink
from corral.harness.retry import RetryPolicy
from corral.harness.sessionlog import LogEntry
from corral.harness.turn import Outcome, SessionDriver
from tests.unit.harness.fakes import (
    SESSION_ID,
    FakeDeltas,
    FakeModel,
    FakeStore,
    RecordingSleep,
    Reply,
    StoreLog,
    held_lease,
    user,
)


class CountingStore(FakeStore):
    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    async def load(self, session_id: str) -> bytes | None:
        self.loads += 1
        return await super().load(session_id)


def driver(store: FakeStore, model: FakeModel, *, snapshot_every: int = 1, keep_folds: int = 8) -> SessionDriver:
    return SessionDriver(
        store=store,
        log=StoreLog(store),
        environments=store,
        snapshots=store,
        snapshot_every=snapshot_every,
        keep_folds=keep_folds,
        model=model,
        deltas=FakeDeltas(),
        policy=RetryPolicy(max_retries=3, backoff_s=1.0, max_backoff_s=30.0),
        max_tokens=256,
        sleep=RecordingSleep(),
    )


def conversation_at_last_request(store: FakeStore) -> object:
    starts = [e.seq for e in store.log if e.event["type"] == "span.model_request_start"]
    return rebuild([e for e in store.events if e.seq < starts[-1]])


async def test_the_next_run_resumes_from_the_kept_fold_without_reading_the_snapshot() -> None:
    store = CountingStore()
    model = FakeModel(Reply(["one"]), Reply(["two"]), Reply(["three"]))
    harness = driver(store, model, snapshot_every=100)
    for n in range(3):
        store.add(user(f"message {n}", id=f"u{n}"))
        assert await harness.run(SESSION_ID, held_lease()) is Outcome.DONE
        assert model.requests[-1].messages == conversation_at_last_request(store)
    assert store.loads == 1, "only the first run read the snapshot"
    assert harness.resumed == {"missing": 1, "kept": 2}


async def test_a_kept_fold_the_log_moved_far_past_is_left_for_the_snapshot() -> None:
    store = CountingStore()
    model = FakeModel(Reply(["one"]), Reply(["two"]))
    harness = driver(store, model, snapshot_every=3)
    store.add(user("first", id="u0"))
    assert await harness.run(SESSION_ID, held_lease()) is Outcome.DONE
    store.add(*[user(f"elsewhere {n}", id=f"e{n}") for n in range(4)])  # more than snapshot_every records
    assert await harness.run(SESSION_ID, held_lease()) is Outcome.DONE
    assert store.loads == 2
    assert harness.resumed == {"missing": 1, "snapshot": 1}
    assert model.requests[-1].messages == conversation_at_last_request(store)


async def test_a_kept_fold_past_the_end_of_the_log_is_never_trusted() -> None:
    store = CountingStore()
    model = FakeModel(Reply(["one"]), Reply(["two"]))
    harness = driver(store, model, keep_folds=8)
    store.add(user("first", id="u0"))
    assert await harness.run(SESSION_ID, held_lease()) is Outcome.DONE
    store.log = store.log[:2]  # the stream restored from a backup taken before the turn
    store.session["status"] = "idle"
    store.snapshots.clear()
    store.add(user("again", id="u1"))
    assert await harness.run(SESSION_ID, held_lease()) is Outcome.DONE
    assert harness.resumed == {"missing": 2}
    assert model.requests[-1].messages == conversation_at_last_request(store)


async def test_with_no_room_to_keep_folds_every_run_reads_the_snapshot() -> None:
    store = CountingStore()
    model = FakeModel(Reply(["one"]), Reply(["two"]))
    harness = driver(store, model, keep_folds=0)
    for n in range(2):
        store.add(user(f"message {n}", id=f"u{n}"))
        assert await harness.run(SESSION_ID, held_lease()) is Outcome.DONE
    assert store.loads == 2


class SavingStore(CountingStore):
    """Records the stream sequence of each snapshot written; a write takes many turns of the event
    loop (more than the rest of a run's teardown), as a write to the object store does."""

    def __init__(self) -> None:
        super().__init__()
        self.saved_seqs: list[int] = []

    async def save(self, session_id: str, data: bytes) -> None:
        for _ in range(100):
            await asyncio.sleep(0)  # not a wait for anything: the write's own latency
        self.saved_seqs.append(json.loads(data)["seq"])
        await super().save(session_id, data)


def three_runs(snapshot_every: int) -> tuple[SessionDriver, SavingStore]:
    store = SavingStore()
    return driver(store, FakeModel(*[Reply([f"reply {n}"]) for n in range(3)]), snapshot_every=snapshot_every), store


async def run_three_turns(harness: SessionDriver, store: SavingStore) -> None:
    """Each run folds 6 events and offers a snapshot twice: at its turn's end (events 3 past the run's
    start) and as it lets the session go (6 past), at stream sequences 3 and 6 past the start."""
    for n in range(3):
        store.add(user(f"message {n}", id=f"u{n}"))
        assert await harness.run(SESSION_ID, held_lease()) is Outcome.DONE
    assert harness.resumed == {"missing": 1, "kept": 2}


async def test_a_fold_is_kept_with_the_snapshot_its_run_wrote_as_it_let_go() -> None:
    """Every 6 events: each run writes one as it lets the session go (in the background). The fold is
    kept once that write is over, so the next run counts from it; kept with the count from before the
    write, the next run would write one at its turn's end (3 events after the last)."""
    harness, store = three_runs(6)
    await run_three_turns(harness, store)
    assert store.saved_seqs == [7, 13, 19]


async def test_a_kept_fold_does_not_skip_a_snapshot_that_is_due() -> None:
    """Every 7 events: the first run writes none (6 events), the second one at its turn's end (9), the
    third one as it lets go (18: 9 since). Counting from the kept fold's own events instead of the
    last snapshot's, the second and third would write none."""
    harness, store = three_runs(7)
    await run_three_turns(harness, store)
    assert store.saved_seqs == [10, 19]


async def test_a_run_on_a_kept_fold_looks_the_logs_end_up_once_before_its_first_request() -> None:
    """The end looked up to check the kept fold is the one the first decision waits for: a run's
    first model request costs one "last sequence" lookup, not two (each is a round trip to NATS)."""

    class CountingLookups(FakeStore):
        def __init__(self) -> None:
            super().__init__()
            self.lookups: list[str] = []

        async def last_seq_of_log(self, session_id: str) -> int:
            self.lookups.append("end")
            return await super().last_seq_of_log(session_id)

    store = CountingLookups()
    seen_at_request: list[int] = []

    class Watching(FakeModel):
        async def stream(self, request: ModelRequest, on_text: TextSink) -> ModelReply:
            seen_at_request.append(len(store.lookups))
            return await super().stream(request, on_text)

    model = Watching(Reply(["one"]), Reply(["two"]))
    harness = driver(store, model, snapshot_every=100)
    store.add(user("message 0", id="u0"))
    assert await harness.run(SESSION_ID, held_lease()) is Outcome.DONE
    store.add(user("message 1", id="u1"))
    store.lookups.clear()
    seen_at_request.clear()
    assert await harness.run(SESSION_ID, held_lease()) is Outcome.DONE
    assert harness.resumed == {"missing": 1, "kept": 1}
    assert seen_at_request == [1]
    assert model.requests[-1].messages == conversation_at_last_request(store)


async def test_the_read_from_a_kept_fold_starts_while_the_log_is_asked_whether_it_still_holds_it() -> None:
    """The read of the log after a kept fold and the lookups that check the fold go out together:
    the first decision waits for the slower of the two, not for one after the other."""

    class ReadBeforeLookups(FakeStore):
        def __init__(self) -> None:
            super().__init__()
            self.reading = asyncio.Event()
            self.strict = False

        def follow(self, session_id: str, after_seq: int) -> AsyncIterator[LogEntry]:
            self.reading.set()
            return super().follow(session_id, after_seq)

        async def last_seq_of_log(self, session_id: str) -> int:
            if self.strict:  # answered only once the read has started
                async with asyncio.timeout(2):
                    await self.reading.wait()
            return await super().last_seq_of_log(session_id)

    store = ReadBeforeLookups()
    harness = driver(store, FakeModel(Reply(["one"]), Reply(["two"])), snapshot_every=100)
    store.add(user("message 0", id="u0"))
    assert await harness.run(SESSION_ID, held_lease()) is Outcome.DONE
    store.add(user("message 1", id="u1"))
    store.reading.clear()
    store.strict = True
    assert await harness.run(SESSION_ID, held_lease()) is Outcome.DONE
    assert harness.resumed == {"missing": 1, "kept": 1}
