"""What a harness holding a session's lease should do next (pure: the log in, a plan out).

Input is pending when the newest usable ``user.message`` has not been dealt with yet: no model
request started after it was followed by a ``session.status_idle`` (which ends a turn whether it
succeeded, ran out of retries or was interrupted), and no ``user.interrupt`` came after it.
Counting a failed or interrupted turn as dealt with is what keeps a session whose model keeps
failing from being retried forever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from corral.contracts.rpc import LoggedEvent
from corral.harness.conversation import user_blocks

Action = Literal["model_request", "end_turn", "nothing"]
StatusEvent = Literal["session.status_rescheduled", "session.status_running"]


@dataclass(frozen=True)
class Plan:
    """``statuses``: status events to append, in order; ``close_orphans``: starts to close with an
    error end (after the statuses, once the session is ``running`` again); then ``action``: call the
    model, end the turn (idle, ``end_turn``) or do nothing."""

    action: Action
    statuses: tuple[StatusEvent, ...] = ()
    close_orphans: tuple[str, ...] = ()


NOTHING = Plan("nothing")


def _seq_of_first(events: Sequence[LoggedEvent], kind: str, *, after: int) -> int | None:
    return next((e.seq for e in events if e.seq > after and e.event.get("type") == kind), None)


def _any_after(events: Sequence[LoggedEvent], kind: str, *, after: int) -> bool:
    return _seq_of_first(events, kind, after=after) is not None


def has_pending_input(events: Sequence[LoggedEvent]) -> bool:
    last_input = next(
        (
            e.seq
            for e in reversed(events)
            if e.event.get("type") == "user.message" and user_blocks(e.event.get("content"))
        ),
        None,
    )
    if last_input is None or _any_after(events, "user.interrupt", after=last_input):
        return False
    started = _seq_of_first(events, "span.model_request_start", after=last_input)
    return started is None or not _any_after(events, "session.status_idle", after=started)


def interrupted_after(events: Sequence[LoggedEvent], seq: int) -> bool:
    """Whether a ``user.interrupt`` was logged after stream sequence ``seq``."""
    return _any_after(events, "user.interrupt", after=seq)


def orphan_starts(events: Sequence[LoggedEvent]) -> tuple[str, ...]:
    """Ids of ``span.model_request_start`` events that no ``span.model_request_end`` closes."""
    ended = {e.event.get("model_request_start_id") for e in events if e.event.get("type") == "span.model_request_end"}
    return tuple(
        str(e.event["id"])
        for e in events
        if e.event.get("type") == "span.model_request_start" and e.event.get("id") not in ended
    )


def decide(session: Mapping[str, Any], events: Sequence[LoggedEvent]) -> Plan:
    """The plan for a session we just took (or still hold) the lease on.

    A status of ``running`` or ``rescheduling`` seen by a lease holder means the previous holder
    died mid-turn: the session is rescheduled (``running`` → ``rescheduled`` → ``running``) and its
    half-written model request, if any, is closed with an error end so every start has an end.
    If that turn has nothing left to do (an interrupt came in), it just ends.
    """
    status = session.get("status")
    if status == "terminated" or session.get("archived_at"):
        return NOTHING
    pending = has_pending_input(events)
    inherited = status in ("running", "rescheduling")
    if not pending and not inherited:
        return NOTHING
    statuses: tuple[StatusEvent, ...]
    if status == "running":
        statuses = ("session.status_rescheduled", "session.status_running") if pending else ()
    elif status == "rescheduling" or pending:
        statuses = ("session.status_running",)
    else:
        statuses = ()
    return Plan(
        action="model_request" if pending else "end_turn",
        statuses=statuses,
        close_orphans=orphan_starts(events),
    )
