"""The invariants a fault must never break, checked offline on a history and what the stack holds.

``check(history, observation)`` reads the clients' history (``tests.faults.history``) beside the
final state of the system (``Observation``: the session logs as the stream holds them, the Postgres
projection and the fold of the log, the lease holders, the lines the tool calls appended in their
sandboxes) and returns a ``Verdict``: every violation found, and counts to print. The invariants
(reliability plan, section (b)):

``lost``        an acknowledged append (a ``send`` answered ``ok``) or an event a client once read is
                not in the log (I1)
``duplicated``  an event id twice in a session's log, or one client message (each carries a unique
                text) stored twice: a retried send applied twice (I2)
``order``       a session's sequence numbers not strictly increasing, a read that is not a prefix of
                the final log (two orders seen), a tool result without its call before it, or two
                results for one call (I3)
``turns``       a turn (from a ``user.message`` to the next) that neither finished
                (``session.status_idle`` with ``end_turn``) nor reported a ``session.error`` (I7)
``effect_once`` a tool call's side effect seen more often than the log holds calls for it: the sandbox
                ran one ``(session_id, tool_use_id)`` twice (I5)
``kept``        a tool call answered as run (its result not an error) whose side effect is not in the
                session's sandbox, when no later result of the session said its workspace was lost:
                a sandbox replaced (or its workspace emptied) silently, e.g. by a restarted manager
                that did not adopt the session's running container
``stuck``       a session ``running`` with nobody holding its lease (I7)
``projection``  the Postgres projection differs from the fold of the log (I6)

Pure functions over plain data: the unit tests feed it hand-made histories and observations.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from tests.faults.history import History

INVARIANTS: Final = ("lost", "duplicated", "order", "turns", "effect_once", "kept", "stuck", "projection")

#: What every sandbox-manager message announcing a session's workspace gone says (a new sandbox after an
#: idle removal, a container that stopped or broke the agent's protocol, one lost while it was down).
WORKSPACE_LOST: Final = "/workspace were lost"

#: What a scripted tool call appends to the sandbox file: unique per (session, turn, step) of the script.
MARKER: Final = re.compile(r"\bfxm-[0-9a-z]+-\d+-\d+\b")


def marker(session_token: str, turn: int, step: int) -> str:
    """The line a scripted tool call appends (``MARKER`` finds it in commands and in the file)."""
    return f"fxm-{session_token}-{turn}-{step}"


@dataclass(frozen=True)
class LogEvent:
    """One API-visible event of a session's log: its stream sequence, id, type and fields."""

    seq: int
    id: str
    type: str
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """What a session's projection holds (or what the fold of its log says it should)."""

    status: str
    last_seq: int
    usage: tuple[int, int]
    body: dict[str, Any]
    events: tuple[tuple[int, str], ...]


@dataclass
class Observation:
    """The system after the run, quiescent: per session, its log (stream order), its projected and
    folded rows, its lease holder (``None``: no lease); and every line the sandboxes' tool calls wrote."""

    log: dict[str, list[LogEvent]]
    projected: dict[str, Row]
    folded: dict[str, Row]
    leases: dict[str, str | None]
    sandbox_lines: list[str]


@dataclass(frozen=True)
class Violation:
    invariant: str
    session: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant} [{self.session}]: {self.detail}"


@dataclass
class Verdict:
    violations: list[Violation]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.violations

    def of(self, invariant: str) -> list[Violation]:
        return [v for v in self.violations if v.invariant == invariant]

    def summary(self) -> str:
        counted = " ".join(f"{k}={v}" for k, v in self.counts.items())
        broken = {name: len(self.of(name)) for name in INVARIANTS if self.of(name)}
        head = "valid" if self.ok else f"INVALID {broken}"
        return "\n  ".join([f"{head}: {counted}", *(str(v) for v in self.violations[:20])])


def check(history: History, seen: Observation) -> Verdict:
    violations = [
        *_lost(history, seen),
        *_duplicated(seen),
        *_order(history, seen),
        *_turns(seen),
        *_effect_once(seen),
        *_kept(seen),
        *_stuck(seen),
        *_projection(seen),
    ]
    return Verdict(violations, _counts(history, seen))


def _ids(seen: Observation, session: str) -> list[str]:
    return [event.id for event in seen.log.get(session, [])]


def _lost(history: History, seen: Observation) -> Iterable[Violation]:
    for op in history.completions("send"):
        if op.kind == "ok" and op.value["event_id"] not in _ids(seen, op.value["session"]):
            yield Violation("lost", op.value["session"], f"acknowledged {op.value['event_id']} is not in the log")
    for op in history.completions("read"):
        if op.kind == "ok":
            stored = set(_ids(seen, op.value["session"]))
            missing = [event_id for event_id in op.value["event_ids"] if event_id not in stored]
            if missing:
                yield Violation("lost", op.value["session"], f"read at {op.time:.2f}s, now gone: {missing[:3]}")


def text_of(event: LogEvent) -> str:
    blocks = event.body.get("content") or []
    return "\n".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")


def _duplicated(seen: Observation) -> Iterable[Violation]:
    for session, events in seen.log.items():
        for event_id, times in Counter(e.id for e in events).items():
            if times > 1:
                yield Violation("duplicated", session, f"{event_id} stored {times} times")
        texts = Counter(text_of(e) for e in events if e.type == "user.message")
        for text, times in texts.items():
            if times > 1:
                yield Violation("duplicated", session, f"user message {text!r} stored {times} times")


def _order(history: History, seen: Observation) -> Iterable[Violation]:
    for session, events in seen.log.items():
        seqs = [e.seq for e in events]
        if any(b <= a for a, b in itertools.pairwise(seqs)):
            yield Violation("order", session, f"sequence numbers not increasing: {seqs}")
        called: set[str] = set()
        answered: set[str] = set()
        for event in events:
            if event.type == "agent.tool_use":
                called.add(event.id)
            elif event.type == "agent.tool_result":
                use = str(event.body.get("tool_use_id"))
                if use not in called:
                    yield Violation("order", session, f"result {event.id} for {use}, not called before it")
                if use in answered:
                    yield Violation("order", session, f"second result {event.id} for {use}")
                answered.add(use)
    for op in history.completions("read"):
        if op.kind == "ok":
            read, stored = list(op.value["event_ids"]), _ids(seen, op.value["session"])
            if read != stored[: len(read)]:
                yield Violation("order", op.value["session"], f"read at {op.time:.2f}s is not a prefix of the log")


def _turns(seen: Observation) -> Iterable[Violation]:
    for session, events in seen.log.items():
        turns: list[list[LogEvent]] = []
        for event in events:
            if event.type == "user.message":
                turns.append([])
            if turns:
                turns[-1].append(event)
        for turn in turns:
            finished = any(
                e.type == "session.status_idle" and (e.body.get("stop_reason") or {}).get("type") == "end_turn"
                for e in turn
            )
            if not finished and not any(e.type == "session.error" for e in turn):
                shown = [e.type for e in turn]
                yield Violation("turns", session, f"turn of {turn[0].id} neither finished nor errored: {shown}")


def _effect_once(seen: Observation) -> Iterable[Violation]:
    ran = Counter(found for line in seen.sandbox_lines for found in MARKER.findall(line))
    for session, events in seen.log.items():
        calls = Counter(
            found
            for e in events
            if e.type == "agent.tool_use"
            for found in MARKER.findall(str((e.body.get("input") or {}).get("command", "")))
        )
        for mark, times in calls.items():
            if ran[mark] > times:
                yield Violation("effect_once", session, f"{mark}: {times} call(s) in the log, ran {ran[mark]} times")


def _kept(seen: Observation) -> Iterable[Violation]:
    """A tool call that ran (as its result says) left its marker in the session's current sandbox,
    unless a later result announced the workspace lost. Calls answered with an error are not looked
    at: "no sandbox-manager ... the tool did not run" ran nothing, "outcome unknown" may have run or not."""
    ran = {found for line in seen.sandbox_lines for found in MARKER.findall(line)}
    for session, events in seen.log.items():
        commands = {
            e.id: str((e.body.get("input") or {}).get("command", "")) for e in events if e.type == "agent.tool_use"
        }
        results = [e for e in events if e.type == "agent.tool_result"]
        lost_at = max((e.seq for e in results if WORKSPACE_LOST in _result_text(e)), default=0)
        for result in results:
            if result.body.get("is_error") or result.seq < lost_at:
                continue
            for mark in MARKER.findall(commands.get(str(result.body.get("tool_use_id")), "")):
                if mark not in ran:
                    yield Violation("kept", session, f"{mark}: ran (result {result.id}), not in the sandbox")


def _result_text(event: LogEvent) -> str:
    blocks = event.body.get("content") or []
    return "\n".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict))


def _stuck(seen: Observation) -> Iterable[Violation]:
    for session, row in seen.folded.items():
        if row.status == "running" and seen.leases.get(session) is None:
            yield Violation("stuck", session, "running, and no harness holds its lease")


def _projection(seen: Observation) -> Iterable[Violation]:
    for session in sorted(set(seen.folded) | set(seen.projected)):
        folded, projected = seen.folded.get(session), seen.projected.get(session)
        if folded is None or projected is None:
            where = "Postgres only" if folded is None else "the log only"
            yield Violation("projection", session, f"in {where}")
            continue
        for name in ("status", "last_seq", "usage", "body", "events"):
            if getattr(folded, name) != getattr(projected, name):
                shown = f"{getattr(projected, name)!r:.120} in Postgres, {getattr(folded, name)!r:.120} in the log"
                yield Violation("projection", session, f"{name}: {shown}")


def _counts(history: History, seen: Observation) -> dict[str, int]:
    events = [e for log in seen.log.values() for e in log]
    sends = list(history.completions("send"))
    ran = Counter(m for line in seen.sandbox_lines for m in MARKER.findall(line))
    called = [m for e in events if e.type == "agent.tool_use" for m in MARKER.findall(str(e.body.get("input")))]
    return {
        **history.counts(),
        "sends_ok": sum(op.kind == "ok" for op in sends),
        "sends_unknown": sum(op.kind == "unknown" for op in sends),
        "sessions": len(seen.log),
        "events": len(events),
        "turns": sum(e.type == "user.message" for e in events),
        "turns_ended": sum(
            e.type == "session.status_idle" and (e.body.get("stop_reason") or {}).get("type") == "end_turn"
            for e in events
        ),
        "errors": sum(e.type == "session.error" for e in events),
        "tool_calls": sum(e.type == "agent.tool_use" for e in events),
        # calls answered with an error (e.g. while no sandbox-manager runs): most never ran
        "tool_errors": sum(e.type == "agent.tool_result" and bool(e.body.get("is_error")) for e in events),
        "tool_runs": sum(ran[m] for m in set(called)),
    }
