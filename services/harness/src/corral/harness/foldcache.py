"""The folds of the sessions this harness let go most recently, kept in memory for their next run.

A session's turns usually follow one another on the same harness: the lease is let go at each
turn's end, and the next message wakes the session again. Reading the session's snapshot back
each time (an object-store read and a JSON decode of the whole fold) would make every turn cost
more than the last. So a run that ends cleanly leaves its fold here, and the next run of that
session on this harness takes it back and follows the log from where it stopped, folding only what
other harnesses appended meanwhile (when that is more than ``max_gap`` records, or the log no longer
holds the fold's last record, the snapshot is used instead).

A fold is a pure function of the log, so a kept fold followed to the log's end equals the fold from
scratch (the unit tests check it). A fold is held by one run at a time: ``take`` removes it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from corral.harness.fold import SessionFold


@dataclass(frozen=True)
class Kept:
    fold: SessionFold
    snapshot_events: int
    """``fold.events`` when its session's snapshot was last written (or resumed from)."""


class FoldCache:
    """At most ``size`` folds, by session id; the least recently kept goes first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._kept: OrderedDict[str, Kept] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def take(self, session_id: str) -> Kept | None:
        """The session's kept fold, removed from the cache (the caller's run now owns it)."""
        return self._kept.pop(session_id, None)

    def keep(self, session_id: str, kept: Kept) -> None:
        if self.size <= 0:
            return
        self._kept[session_id] = kept
        self._kept.move_to_end(session_id)
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)
