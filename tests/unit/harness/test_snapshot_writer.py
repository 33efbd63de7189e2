"""Snapshots are written in the background of a session's run: encoded when offered (so each names
exactly the stream sequence its state is of), one write at a time, waited for at the run's end."""

from __future__ import annotations

import asyncio
import json

from corral.harness import snapshots
from corral.harness.fold import SessionFold, decode
from corral.harness.snapshots import SnapshotWriter
from tests.unit.harness.fakes import SESSION_ID
from tests.unit.harness.test_fold import records


def message(n: int) -> dict[str, object]:
    return {"type": "user.message", "id": f"u{n}", "content": [{"type": "text", "text": f"message {n}"}]}


class SlowSnapshots:
    """Saves wait until ``let_go`` is set; what was saved, in order."""

    def __init__(self) -> None:
        self.saved: list[bytes] = []
        self.saving = asyncio.Event()
        self.let_go = asyncio.Event()

    async def load(self, session_id: str) -> bytes | None:
        return self.saved[-1] if self.saved else None

    async def save(self, session_id: str, data: bytes) -> None:
        self.saving.set()
        await self.let_go.wait()
        self.saved.append(data)


async def test_a_snapshot_holds_the_fold_as_offered_whatever_is_folded_while_it_is_written() -> None:
    data = records([message(n) for n in range(6)])
    fold = SessionFold.of(decode(seq, d) for seq, d in enumerate(data[:4], start=1))
    store = SlowSnapshots()

    async with asyncio.TaskGroup() as tg:
        writer = SnapshotWriter(store, SESSION_ID, tg, every_events=2, written_events=0)
        assert writer.offer(fold)
        await store.saving.wait()
        for seq, d in enumerate(data[4:], start=5):  # the run folds on while the write is out
            fold.apply(decode(seq, d))
        assert not writer.offer(fold), "a second write started while one was in flight"
        store.let_go.set()
    # the task group's end waited for the write

    assert len(store.saved) == 1
    saved = json.loads(store.saved[0])
    assert saved["seq"] == 4
    restored = snapshots.decode(SESSION_ID, store.saved[0])
    assert isinstance(restored, SessionFold)
    assert restored.state() == SessionFold.of(decode(s, d) for s, d in enumerate(data[:4], start=1)).state()
    assert writer.written_events == 3


async def test_no_snapshot_is_written_before_enough_events_were_folded_since_the_last() -> None:
    data = records([message(n) for n in range(3)])
    fold = SessionFold.of(decode(seq, d) for seq, d in enumerate(data, start=1))
    store = SlowSnapshots()
    store.let_go.set()

    async with asyncio.TaskGroup() as tg:
        writer = SnapshotWriter(store, SESSION_ID, tg, every_events=5, written_events=0)
        assert not writer.offer(fold)
        writer = SnapshotWriter(store, SESSION_ID, tg, every_events=2, written_events=2)
        assert not writer.offer(fold)

    assert store.saved == []


async def test_a_write_in_flight_is_cancelled_with_the_run() -> None:
    data = records([message(n) for n in range(3)])
    fold = SessionFold.of(decode(seq, d) for seq, d in enumerate(data, start=1))
    store = SlowSnapshots()

    class LeaseLostError(Exception):
        pass

    try:
        async with asyncio.TaskGroup() as tg:
            writer = SnapshotWriter(store, SESSION_ID, tg, every_events=1, written_events=0)
            writer.offer(fold)
            await store.saving.wait()
            raise LeaseLostError
    except* LeaseLostError:
        pass

    assert store.saved == []
    assert writer.written_events == 0
