"""What a harness holding a session's lease should do next (pure: the log in, a plan out).

This is the crash-safe heart of the harness: a worker that dies at any point leaves a log from
which the next holder computes the rest of the turn, and nothing in the plan depends on memory.

**Tool uses.** Every ``agent.tool_use`` / ``agent.custom_tool_use`` is *open* until it has an answer:
an ``agent.tool_result`` (or, for a custom tool, a ``user.custom_tool_result``). An open use is

    executable  a built-in tool allowed by its policy, or ``ask`` and confirmed ``allow``: run it
                (an execute re-sent after a crash is answered from the sandbox-manager's record,
                so the tool runs at most once)
    denied      ``ask`` and confirmed ``deny`` (or refused by its policy): log its error result
    waiting     ``ask`` without a confirmation, or a custom tool without a result: the session
                idles with ``requires_action`` listing them (again, with the remainder, when only
                some were answered)

and a ``user.interrupt`` logged after it closes it with an error result and ends the turn.

What counts as pending input, a budget pause and the tool call limit are the ledger's
(``corral.harness.ledger``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from corral.contracts.rpc import LoggedEvent
from corral.harness.ledger import Ledger, ToolUse
from corral.harness.messageblocks import Block, denial_content

Action = Literal["model_request", "tools", "requires_action", "end_turn", "tool_limit", "nothing"]
StatusEvent = Literal["session.status_rescheduled", "session.status_running"]

INTERRUPTED: Final = "interrupted by the user"
"""The result of a tool that was (or may have been) running when the turn was interrupted."""
NOT_RUN: Final = "not run: the turn was interrupted"
"""The result of a tool use the interrupted turn never started."""
POLICY_DENIED: Final = "This tool call was denied by the agent's permission policy."


@dataclass(frozen=True)
class ToolCall:
    """An ``agent.tool_use`` (or ``agent.mcp_tool_use``: ``mcp_server`` names its server) to execute;
    ``id`` (the event id) is the sandbox-manager's key."""

    id: str
    name: str
    input: dict[str, Any]
    mcp_server: str | None = None


@dataclass(frozen=True)
class Answer:
    """An error ``agent.tool_result`` (``agent.mcp_tool_result`` when ``mcp``) to log without running anything."""

    tool_use_id: str
    content: tuple[Block, ...]
    mcp: bool = False

    @classmethod
    def text(cls, tool_use_id: str, text: str, *, mcp: bool = False) -> Answer:
        return cls(tool_use_id, ({"type": "text", "text": text},), mcp)


@dataclass(frozen=True)
class Plan:
    """In order: append ``statuses``; close ``close_orphans`` with error ends; (``end_turn`` only)
    ``Cancel`` the tool uses in ``cancel``; log ``answers``; then the action:

    - ``model_request``: call the model
    - ``tools``: execute ``execute`` one by one, logging each result, then decide again
    - ``requires_action``: idle waiting for ``awaiting`` (appended with the answers, in one go)
    - ``end_turn``: idle with ``end_turn`` (appended with the answers, in one go)
    - ``tool_limit``: the turn used its tool calls up: a ``session.error``
      (``tool_use_limit_reached_error``) and idle with ``end_turn``, without asking the model again
    - ``nothing``: leave the session alone
    """

    action: Action
    statuses: tuple[StatusEvent, ...] = ()
    close_orphans: tuple[str, ...] = ()
    answers: tuple[Answer, ...] = ()
    execute: tuple[ToolCall, ...] = ()
    awaiting: tuple[str, ...] = ()
    cancel: tuple[str, ...] = ()


NOTHING = Plan("nothing")


def _denial(use: ToolUse) -> Answer:
    """The error result of a use its confirmation or its policy denied."""
    mcp = use.mcp_server is not None
    if use.confirmation == "deny":
        return Answer(use.id, tuple(denial_content(use.deny_message)), mcp)
    return Answer.text(use.id, POLICY_DENIED, mcp=mcp)


def _statuses(status: object, *, owned: bool, working: bool) -> tuple[StatusEvent, ...]:
    """Status events needed before appending anything: the store takes agent, span and tool events
    only while the session is ``running``. A ``running`` session this worker did not set running was
    left by a dead worker: it is rescheduled first if there is work to redo."""
    if status == "running":
        return ("session.status_rescheduled", "session.status_running") if working and not owned else ()
    return ("session.status_running",)


def _interrupted(uses: Sequence[ToolUse], *, owned: bool) -> tuple[tuple[Answer, ...], tuple[str, ...]]:
    """Answers closing the open uses of an interrupted turn, and the uses to ``Cancel``.

    A use this worker would have run but had not started (``owned``: it answers the one it was
    running itself) was not run; one a dead worker may have been running is cancelled.
    """
    answers: list[Answer] = []
    cancel: list[str] = []
    for use in uses:
        mcp = use.mcp_server is not None
        if use.executable and not owned:
            if not mcp:  # an MCP call a dead worker made ends with its proxy's timeout
                cancel.append(use.id)
            answers.append(Answer.text(use.id, INTERRUPTED, mcp=mcp))
        else:
            answers.append(Answer.text(use.id, NOT_RUN, mcp=mcp))
    return tuple(answers), tuple(cancel)


def decide(
    session: Mapping[str, Any],
    events: Sequence[LoggedEvent],
    *,
    owned: bool = False,
    max_tool_uses: int | None = None,
) -> Plan:
    """``plan`` over the fold of ``events`` (the whole log, folded from scratch)."""
    return plan(session, Ledger.of(events), owned=owned, max_tool_uses=max_tool_uses)


def plan(
    session: Mapping[str, Any],
    ledger: Ledger,
    *,
    owned: bool = False,
    max_tool_uses: int | None = None,
) -> Plan:
    """The plan for a session we just took (or still hold) the lease on, from the fold of its log
    (``ledger``, kept up to date record by record while the lease is held).

    ``max_tool_uses`` caps the tool calls of one turn: once the model has made that many since the
    user last wrote, the calls it made still run (or wait for their answers), but the model is not
    asked again; the turn ends with a ``tool_use_limit_reached_error``.

    ``owned`` says this worker set the session ``running`` itself (it is between steps of a turn).
    Otherwise a status of ``running`` or ``rescheduling`` means the previous holder died mid-turn: the
    session is rescheduled (``running`` → ``rescheduled`` → ``running``) if there is work to redo, and
    its half-written model request, if any, is closed with an error end so every start has an end.
    """
    status = session.get("status")
    if status == "terminated" or session.get("archived_at"):
        return NOTHING
    orphans = ledger.orphans
    mid_turn = status in ("running", "rescheduling")
    uses = ledger.open_uses
    if uses and ledger.last_interrupt > min(use.seq for use in uses):
        answers, cancel = _interrupted(uses, owned=owned)
        return Plan(
            "end_turn",
            statuses=_statuses(status, owned=owned, working=False),
            close_orphans=orphans,
            answers=answers,
            cancel=cancel,
        )
    executable = tuple(ToolCall(u.id, u.name, u.input, u.mcp_server) for u in uses if u.executable)
    denials = tuple(_denial(u) for u in uses if u.denied)
    if executable or denials:
        return Plan(
            "tools",
            statuses=_statuses(status, owned=owned, working=True),
            close_orphans=orphans,
            answers=denials,
            execute=executable,
        )
    if uses:
        waiting = tuple(u.id for u in uses)
        if not mid_turn and ledger.last_idle_ids == waiting:
            return NOTHING
        return Plan(
            "requires_action",
            statuses=_statuses(status, owned=owned, working=False),
            close_orphans=orphans,
            awaiting=waiting,
        )
    if ledger.pending:
        statuses = _statuses(status, owned=owned, working=True)
        limited = max_tool_uses is not None and ledger.turn_tool_uses >= max_tool_uses
        if limited and not ledger.message_unseen:
            return Plan("tool_limit", statuses=statuses, close_orphans=orphans)
        return Plan("model_request", statuses=statuses, close_orphans=orphans)
    if mid_turn:
        return Plan("end_turn", statuses=_statuses(status, owned=owned, working=False), close_orphans=orphans)
    return NOTHING
