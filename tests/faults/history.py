"""A Jepsen-style history: every operation a test client makes, as it happened.

Each operation is recorded twice: ``invoke`` when the client starts it, then exactly one completion:
``ok`` (the system answered yes), ``fail`` (it answered a definite no: nothing happened) or
``unknown`` (no answer: a timeout, a dropped connection, a 5xx; it may or may not have happened).
The checker (``tests.faults.checker``) reads the history offline, after the run, with what the
system finally holds; ``History.dump`` writes it as JSON lines for a failed run's post-mortem.

Times are seconds on the monotonic clock since the history began, so faults recorded beside the
operations (``History.mark``) can be placed among them.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

#: An operation's record: its start, or how it ended.
Kind = Literal["invoke", "ok", "fail", "unknown"]

#: What a client does: append a user message, read a session's events, wait for a turn to end,
#: or append anything at all as a probe of the write path after a fault.
Function = Literal["send", "read", "turn", "probe"]


@dataclass(frozen=True)
class Op:
    """One record of the history. ``op_id`` ties a completion to its ``invoke``."""

    op_id: int
    process: str
    kind: Kind
    f: Function
    time: float
    value: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Mark:
    """A fault's start or end (``what`` says which), placed on the history's clock."""

    time: float
    what: str


@dataclass(frozen=True)
class Pending:
    """A started operation; pass it to ``History.ok``/``fail``/``unknown`` to complete it."""

    op_id: int
    process: str
    f: Function
    value: dict[str, Any]


class History:
    """Append-only, for one event loop (no locking: asyncio tasks do not preempt each other)."""

    def __init__(self) -> None:
        self._began = time.monotonic()
        self._ids = itertools.count(1)
        self.ops: list[Op] = []
        self.marks: list[Mark] = []
        self._open: set[int] = set()

    def now(self) -> float:
        return time.monotonic() - self._began

    def invoke(self, process: str, f: Function, **value: Any) -> Pending:
        pending = Pending(next(self._ids), process, f, dict(value))
        self._open.add(pending.op_id)
        self.ops.append(Op(pending.op_id, process, "invoke", f, self.now(), dict(value)))
        return pending

    def _complete(self, pending: Pending, kind: Kind, value: dict[str, Any]) -> Op:
        if pending.op_id not in self._open:
            raise ValueError(f"operation {pending.op_id} was already completed")
        self._open.remove(pending.op_id)
        op = Op(pending.op_id, pending.process, kind, pending.f, self.now(), {**pending.value, **value})
        self.ops.append(op)
        return op

    def ok(self, pending: Pending, **value: Any) -> Op:
        return self._complete(pending, "ok", value)

    def fail(self, pending: Pending, **value: Any) -> Op:
        return self._complete(pending, "fail", value)

    def unknown(self, pending: Pending, **value: Any) -> Op:
        return self._complete(pending, "unknown", value)

    def mark(self, what: str) -> Mark:
        mark = Mark(self.now(), what)
        self.marks.append(mark)
        return mark

    def completions(self, f: Function | None = None) -> Iterator[Op]:
        """Every ``ok``/``fail``/``unknown`` record (of function ``f``), in the order they happened."""
        return (op for op in self.ops if op.kind != "invoke" and (f is None or op.f == f))

    def invoked_at(self) -> dict[int, float]:
        return {op.op_id: op.time for op in self.ops if op.kind == "invoke"}

    def counts(self) -> dict[str, int]:
        """How many operations were invoked, and how many ended each way."""
        counted = {"invoke": 0, "ok": 0, "fail": 0, "unknown": 0}
        for op in self.ops:
            counted[op.kind] += 1
        return counted

    def first_ok_after(self, moment: float, f: Function, *, where: Callable[[Op], bool] | None = None) -> float | None:
        """Seconds from ``moment`` until the first ``ok`` of an ``f`` operation invoked at or after it (and,
        with ``where``, for which ``where`` holds)."""
        started = self.invoked_at()
        times = [
            op.time
            for op in self.completions(f)
            if op.kind == "ok" and started[op.op_id] >= moment and (where is None or where(op))
        ]
        return min(times) - moment if times else None

    def dump(self, path: Path) -> None:
        """The history as JSON lines (operations, then fault marks), for reading a failed run."""
        with path.open("w") as out:
            for op in self.ops:
                out.write(json.dumps({"type": "op", **asdict(op)}, default=str) + "\n")
            for mark in self.marks:
                out.write(json.dumps({"type": "mark", **asdict(mark)}) + "\n")
