"""The per-session driver: while holding the lease, take steps until the session has nothing to do.

The session's log is read straight from JetStream (``sessionlog``) and folded record by record
(``fold``) while the lease is held, starting from the session's snapshot when there is a usable one
(``snapshots``). Each step catches the fold up with the log's end, decides (``corral.harness.decide``,
from the fold of the log alone) and does one thing: a model request, the tool calls that can run
now, or an idle (``end_turn`` / ``requires_action``). A model request appends
``span.model_request_start``, streams the model (publishing deltas), then appends the reply in ONE
append: ``agent.message``, one
``agent.tool_use`` / ``agent.custom_tool_use`` per tool call, ``span.model_request_end``, and, when
the model called no tools, ``session.status_idle``. A harness killed mid-stream therefore leaves
only the start in the log, and the next lease holder closes it and asks the model again: exactly
one reply per request. A failed request is appended as an error end plus a ``session.error``
(``retrying``, then ``exhausted``; ``exhausted`` at once when asking again cannot help). While it
waits to retry, the session is ``rescheduling`` (``session.status_rescheduled``) and it is
``running`` again (``session.status_running``) as the retry starts.

Tool calls run one at a time, in the model's order, in the session's sandbox (``Execute``, keyed by
the ``agent.tool_use`` event id, so an execute re-sent after a crash returns the recorded outcome);
each result is appended as soon as it arrives. The sandbox is provisioned when a turn starts,
without waiting: the first model request never waits for a container.

The run ends only when a decision made on the whole log (caught up after the last append) finds
nothing to do, so input logged right after a ``session.status_idle`` is taken by the holder instead
of waiting for the lease to change hands.

The driver stops as soon as the lease is lost (no further append is even attempted), and when a
``user.interrupt`` is logged it stops a streaming request (ending the turn with what was written so
far) or cancels the running tool call (its result says it was interrupted; the next decision
closes the calls not yet run and ends the turn).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from corral import telemetry
from corral.contracts import rpc, sandbox
from corral.harness import crashpoints, events, snapshots
from corral.harness.compaction import Compactor
from corral.harness.context import prompt_too_long
from corral.harness.conversation import ChatMessage
from corral.harness.crashpoints import Crashpoint, no_crash
from corral.harness.decide import INTERRUPTED, TOOL_LIMIT_ERROR, Plan, ToolCall, plan
from corral.harness.deltas import Deltas, Preview
from corral.harness.environments import Environments
from corral.harness.events import EventDict
from corral.harness.fold import Decoded, SessionFold
from corral.harness.lease import HeldLease, Sleep
from corral.harness.model import Model, ModelError, ModelReply, ModelRequest, ToolRequest
from corral.harness.retry import RetryPolicy
from corral.harness.sandbox import Sandbox, SandboxError
from corral.harness.sessionlog import LogSource, SessionLog, following
from corral.harness.snapshots import Snapshots
from corral.harness.store import LeaseConflict, Store, StoreRejected, StoreUnavailable
from corral.harness.tools import Toolbox, toolbox

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)

_MAX_COMPACTION_LEVEL = 6
#: Backoff of the interrupt watcher after a failed watch or log read.
"""How many times a turn compacts harder after "prompt is too long" before it gives up."""

_STATUS_EVENTS = {
    "session.status_rescheduled": events.status_rescheduled,
    "session.status_running": events.status_running,
}


class Outcome(enum.Enum):
    """How a session run ended, which decides what happens to its wake-up message."""

    DONE = "done"
    """Nothing left to do: ack."""
    LOST = "lost"
    """The lease is not ours any more: nak, so the session is looked at again once it is free."""
    RETRY_LATER = "retry_later"
    """The session-store was unavailable (or behind): nak with a backoff."""
    REJECTED = "rejected"
    """The store refuses to take this session's events: retrying will not help, term."""


class _LeaseLost(Exception):
    pass


@dataclass(frozen=True)
class Interrupted:
    """A request stopped by ``user.interrupt``; ``texts`` is what had streamed."""

    texts: tuple[str, ...]


@dataclass
class _TurnState:
    """One run's state. Shared with the interrupt watcher: the log position the current step decided
    on. ``owned``: the session is ``running`` because this run set it so (between steps of a turn)."""

    horizon: int | None = None
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    latest_interrupt: int = 0
    """Stream sequence of the newest ``user.interrupt`` the watcher has seen."""
    owned: bool = False
    provisioning: asyncio.Task[None] | None = None
    context_limit: int | None = None
    """The largest prompt the model said it takes ("prompt is too long: N tokens > M maximum")."""
    environment: dict[str, Any] | None = None
    environment_read: bool = False
    handoff_seen: bool = False
    snapshot_events: int = 0
    """``SessionFold.events`` when the last snapshot was written (or resumed from)."""

    def begin(self, horizon: int) -> None:
        """A step decided on the log up to ``horizon``: an interrupt logged after it stops the step
        (even one the watcher saw before the step began)."""
        self.horizon = horizon
        self.notice(self.latest_interrupt)

    def notice(self, interrupt_seq: int) -> bool:
        """Record the newest interrupt seen; returns whether it stops the current step."""
        self.latest_interrupt = max(self.latest_interrupt, interrupt_seq)
        if self.horizon is not None and self.latest_interrupt > self.horizon:
            self.interrupted.set()
            return True
        self.interrupted.clear()
        return False

    def appended(self, batch: Sequence[EventDict]) -> None:
        for event in batch:
            kind = event["type"]
            if kind == "session.status_running":
                self.owned = True
            elif kind in ("session.status_idle", "session.status_rescheduled"):
                self.owned = False


def _fields(session_id: str, **more: Any) -> dict[str, Any]:
    return {"fields": {"session_id": session_id, **more}}


def _stored_id(appended: rpc.Appended, sent: EventDict) -> str:
    """The id the store kept for ``sent`` (ours, unless the store assigns its own)."""
    for stored in appended.events:
        if stored.get("type") == sent["type"] and isinstance(stored.get("id"), str):
            return str(stored["id"])
    return str(sent["id"])


def _agent(session: dict[str, Any]) -> dict[str, Any]:
    snapshot = session.get("agent")
    return snapshot if isinstance(snapshot, dict) else {}


def model_request(session: dict[str, Any], messages: list[ChatMessage], *, max_tokens: int) -> ModelRequest:
    """The Messages request for the session's agent snapshot (model, system, tools) and conversation.

    Raises:
        ModelError: the agent snapshot names no model (not retryable).
    """
    agent = _agent(session)
    model = agent.get("model")
    model_id = model.get("id") if isinstance(model, dict) else model
    if not isinstance(model_id, str) or not model_id:
        raise ModelError("model_request_failed_error", "The session's agent names no model.", retryable=False)
    system = agent.get("system")
    return ModelRequest(
        model=model_id,
        system=system if isinstance(system, str) and system else None,
        messages=messages,
        max_tokens=max_tokens,
        tools=toolbox(agent).definitions,
    )


def not_enabled(name: str, box: Toolbox) -> str:
    offered = ", ".join(definition["name"] for definition in box.definitions) or "none"
    return f"Tool {name!r} is not enabled for this agent. Tools available: {offered}."


def reply_events(box: Toolbox, calls: Sequence[ToolRequest]) -> list[EventDict]:
    """The events for a reply's tool calls, in order, each with a fresh id (its Messages ``tool_use.id``).

    A built-in tool gets ``agent.tool_use`` with its policy's verdict, a custom tool
    ``agent.custom_tool_use``. A name the agent does not have (unknown, or disabled) still gets an
    ``agent.tool_use`` (``evaluated_permission: deny``, no ``evaluation``: refused before any policy
    applied), answered at once by an error ``agent.tool_result``, so the model hears about it.
    """
    logged: list[EventDict] = []
    for call in calls:
        event_id = events.new_event_id()
        kind = box.kind(call.name)
        if kind == "builtin":
            verdict = box.builtin[call.name]
            logged.append(
                events.tool_use(
                    event_id,
                    call.name,
                    call.input,
                    evaluated_permission=verdict.evaluated,
                    evaluation=verdict.evaluation,
                )
            )
        elif kind == "custom":
            logged.append(events.custom_tool_use(event_id, call.name, call.input))
        else:
            logged.append(
                events.tool_use(event_id, call.name, call.input, evaluated_permission="deny", evaluation=None)
            )
            logged.append(events.tool_error(event_id, not_enabled(call.name, box)))
    return logged


def _bash_timeout_ms(call: ToolCall) -> int | None:
    value = call.input.get("timeout_ms") if call.name == "bash" else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class SessionDriver:
    def __init__(
        self,
        *,
        store: Store,
        log: LogSource,
        model: Model,
        deltas: Deltas,
        policy: RetryPolicy,
        max_tokens: int,
        sandbox: Sandbox | None = None,
        environments: Environments | None = None,
        snapshots: Snapshots | None = None,
        snapshot_every: int = 200,
        sleep: Sleep = asyncio.sleep,
        crashpoint: Crashpoint = no_crash,
        reach_timeout_s: float = 10.0,
        cancel_timeout_s: float = 3.0,
        max_tool_uses: int | None = None,
        compactor: Compactor | None = None,
    ) -> None:
        self._store = store
        self._compactor = compactor
        self._log = log
        self._environments = environments
        self._snapshots = snapshots
        self._snapshot_every = snapshot_every
        self._reach_timeout_s = reach_timeout_s
        self.handoff_turns = 0
        """Turns started by a run that had to wait for the lease to change hands (health: the input
        was logged while another holder still held the session and let it go without taking it)."""
        self.resumed: dict[str, int] = {}
        """Runs started, by where their fold came from (``snapshots.Source``), for health."""
        self._sandbox = sandbox
        self._cancel_timeout_s = cancel_timeout_s
        self._model = model
        self._deltas = deltas
        self._policy = policy
        self._max_tokens = max_tokens
        self._sleep = sleep
        self._crash = crashpoint
        self._max_tool_uses = max_tool_uses

    async def run(self, session_id: str, lease: HeldLease, *, min_seq: int = 0) -> Outcome:
        """Work on the session until nothing is pending; ``min_seq`` is a log position the fold
        must have reached (the wake-up's), so a lagging read is never acted on."""
        turn = _TurnState()
        outcome = Outcome.LOST

        def on_record(decoded: Decoded) -> None:
            if decoded.raw.get("type") == "user.interrupt" and turn.notice(decoded.seq):
                logger.info("user.interrupt logged during the turn", extra=_fields(session_id))

        try:
            async with asyncio.TaskGroup() as tg:
                guard = tg.create_task(self._stop_when_lost(lease))
                try:
                    fold = await self._resume(session_id, turn)
                    async with following(
                        self._log, session_id, fold, on_record=on_record, reach_timeout_s=self._reach_timeout_s
                    ) as log:
                        outcome = await self._run_turns(session_id, lease, log, turn, min_seq)
                except StoreUnavailable as exc:
                    logger.warning("session log unavailable: %s", exc, extra=_fields(session_id))
                    outcome = Outcome.RETRY_LATER
                finally:
                    guard.cancel()
                    if turn.provisioning is not None and not turn.provisioning.done():
                        turn.provisioning.cancel()  # the request is out; the sandbox-manager carries on
        except* _LeaseLost:
            logger.warning("lease lost; stopped working on the session", extra=_fields(session_id))
            outcome = Outcome.LOST
        return outcome

    async def _stop_when_lost(self, lease: HeldLease) -> None:
        await lease.lost.wait()
        raise _LeaseLost

    async def _resume(self, session_id: str, turn: _TurnState) -> SessionFold:
        """The fold to start from: the session's snapshot if usable (checked against the log)."""
        started = time.monotonic()
        max_result_chars = self._compactor.policy.max_result_chars if self._compactor is not None else None
        resumed = await snapshots.resume(session_id, self._snapshots, self._log, max_result_chars=max_result_chars)
        self.resumed[resumed.source] = self.resumed.get(resumed.source, 0) + 1
        turn.snapshot_events = resumed.fold.events
        logger.info(
            "resumed the session's fold",
            extra=_fields(
                session_id,
                source=resumed.source,
                seq=resumed.fold.last_seq,
                events=resumed.fold.events,
                resume_ms=round((time.monotonic() - started) * 1000, 1),
            ),
        )
        return resumed.fold

    async def _snapshot(self, session_id: str, fold: SessionFold, turn: _TurnState) -> None:
        """Write the fold's snapshot when ``snapshot_every`` events were folded since the last one."""
        if self._snapshots is None or fold.events - turn.snapshot_events < self._snapshot_every:
            return
        try:
            await self._snapshots.save(session_id, snapshots.encode(session_id, fold))
        except Exception:  # a cache: the next holder folds a little more of the log
            logger.warning("could not write the session's snapshot", extra=_fields(session_id), exc_info=True)
            return
        turn.snapshot_events = fold.events
        logger.info("snapshot written", extra=_fields(session_id, seq=fold.last_seq, events=fold.events))

    async def _run_turns(
        self, session_id: str, lease: HeldLease, log: SessionLog, turn: _TurnState, min_seq: int
    ) -> Outcome:
        fold = log.fold
        try:
            while True:
                await log.catch_up(min_seq)
                if not fold.created or fold.deleted:
                    raise StoreRejected(f"session {session_id!r} no longer exists (its log has no creation record)")
                step = plan(fold.session, fold.ledger, owned=turn.owned, max_tool_uses=self._max_tool_uses)
                logger.info(
                    "decided",
                    extra=_fields(
                        session_id,
                        action=step.action,
                        status=fold.status,
                        last_seq=fold.last_seq,
                        statuses=list(step.statuses),
                        orphans=list(step.close_orphans),
                        execute=[call.id for call in step.execute],
                        answers=[answer.tool_use_id for answer in step.answers],
                        awaiting=list(step.awaiting),
                    ),
                )
                if step.action == "nothing":
                    await self._snapshot(session_id, fold, turn)
                    return Outcome.DONE
                turn.begin(fold.last_seq)
                if step.action == "model_request" and lease.handed_off and not turn.owned and not turn.handoff_seen:
                    turn.handoff_seen = True
                    self.handoff_turns += 1
                    logger.warning("a turn starts after waiting for the lease hand-off", extra=_fields(session_id))
                if step.action == "model_request":
                    await self._start_provisioning(session_id, fold, turn)
                min_seq = await self._step(session_id, lease, log, step, turn)
                if not turn.owned:  # the step ended the turn
                    await self._snapshot(session_id, fold, turn)
        except LeaseConflict as exc:
            logger.warning("store refused our lease: %s", exc, extra=_fields(session_id))
            return Outcome.LOST
        except StoreUnavailable as exc:
            logger.warning("session-store unavailable: %s", exc, extra=_fields(session_id))
            return Outcome.RETRY_LATER
        except StoreRejected as exc:
            logger.error("session-store rejected the session's work: %s", exc, extra=_fields(session_id))
            return Outcome.REJECTED

    async def _append(
        self, session_id: str, lease: HeldLease, turn: _TurnState, batch: Sequence[EventDict]
    ) -> rpc.Appended:
        if lease.lost.is_set():
            raise _LeaseLost
        appended = await self._store.append(session_id, batch, lease=lease.proof())
        turn.appended(batch)
        logger.debug(
            "appended", extra=_fields(session_id, types=[e["type"] for e in batch], last_seq=appended.last_seq)
        )
        return appended

    async def _step(self, session_id: str, lease: HeldLease, log: SessionLog, plan: Plan, turn: _TurnState) -> int:
        """One step of a turn; returns the stream sequence of its last append."""
        # Statuses first: the store takes span and tool events only while the session is running.
        prelude: list[EventDict] = [_STATUS_EVENTS[status]() for status in plan.statuses]
        prelude += [events.model_request_end(start, is_error=True) for start in plan.close_orphans]
        for tool_use_id in plan.cancel:
            await self._cancel(session_id, tool_use_id)
        prelude += [events.tool_result(a.tool_use_id, a.content, is_error=True) for a in plan.answers]
        if plan.action == "end_turn":
            return (await self._append(session_id, lease, turn, [*prelude, events.status_idle("end_turn")])).last_seq
        if plan.action == "requires_action":
            idle = events.requires_action(plan.awaiting)
            return (await self._append(session_id, lease, turn, [*prelude, idle])).last_seq
        if plan.action == "tool_limit":
            logger.warning("turn reached the tool call limit", extra=_fields(session_id, limit=self._max_tool_uses))
            error = events.session_error(
                TOOL_LIMIT_ERROR,
                f"This turn made {self._max_tool_uses} tool calls, the most one turn may make here, so the model "
                "was not asked again. Send a message to let the agent continue.",
                "exhausted",
            )
            batch = [*prelude, error, events.status_idle("retries_exhausted")]
            return (await self._append(session_id, lease, turn, batch)).last_seq
        if plan.action == "tools":
            return await self._run_tools(session_id, lease, log, plan, turn, prelude)
        return await self._model_turn(session_id, lease, log, turn, prelude)

    async def _run_tools(
        self,
        session_id: str,
        lease: HeldLease,
        log: SessionLog,
        plan: Plan,
        turn: _TurnState,
        prelude: list[EventDict],
    ) -> int:
        """Run the plan's tool calls one by one (in the model's order), appending each result as it
        arrives. Stops early on an interrupt; the next decision ends the turn."""
        last_seq = log.fold.last_seq
        environment = await self._environment(log.fold, turn)
        if prelude:
            last_seq = (await self._append(session_id, lease, turn, prelude)).last_seq
        for call in plan.execute:
            if turn.interrupted.is_set():
                break
            result = await self._execute(session_id, environment, call, turn.interrupted)
            self._crash(crashpoints.AFTER_TOOL_EXECUTED)
            last_seq = (await self._append(session_id, lease, turn, [result])).last_seq
        return last_seq

    async def _environment(self, fold: SessionFold, turn: _TurnState) -> dict[str, Any] | None:
        """The session's environment, read once per run (``None``: deleted or unreadable)."""
        if not turn.environment_read and self._environments is not None and fold.environment_id is not None:
            turn.environment = await self._environments.get(fold.environment_id)
            turn.environment_read = True
        return turn.environment

    async def _execute(
        self, session_id: str, environment: dict[str, Any] | None, call: ToolCall, interrupted: asyncio.Event
    ) -> EventDict:
        """The ``agent.tool_result`` of one call: the sandbox's outcome, an error the model can act on
        when the sandbox could not take the call, or "interrupted" (after a ``Cancel``)."""
        if self._sandbox is None:
            return events.tool_error(call.id, "No sandbox is configured in this deployment, so the tool could not run.")
        if environment is None or not isinstance(environment.get("id"), str):
            return events.tool_error(
                call.id,
                "The session's environment could not be read (it was deleted, or the catalog is unavailable), "
                "so the tool could not run. Try again later.",
            )
        config = environment.get("config")
        request = sandbox.Execute(
            session_id=session_id,
            tool_use_id=call.id,
            name=call.name,
            input=call.input,
            environment_id=environment["id"],
            environment_config=config if isinstance(config, dict) else {},
        )
        started = time.monotonic()
        timeout_s = sandbox.execute_reply_timeout_s(_bash_timeout_ms(call))
        executing = asyncio.create_task(self._sandbox.execute(request, timeout_s=timeout_s))
        stopping = asyncio.create_task(interrupted.wait())
        try:
            await asyncio.wait({executing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (executing, stopping):
                task.cancel()
            await asyncio.gather(executing, stopping, return_exceptions=True)
        fields = _fields(session_id, tool_use_id=call.id, tool=call.name)
        if executing.cancelled():
            logger.info("tool call interrupted", extra=fields)
            await self._cancel(session_id, call.id)
            return events.tool_error(call.id, INTERRUPTED)
        try:
            outcome = executing.result()
        except SandboxError as err:
            logger.warning("sandbox could not take the tool call: %s", err.message, extra={**fields, "code": err.code})
            return events.tool_error(call.id, err.message)
        logger.info(
            "tool call answered",
            extra=_fields(
                session_id,
                tool_use_id=call.id,
                tool=call.name,
                is_error=outcome.is_error,
                executed=outcome.executed,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            ),
        )
        content = [block.model_dump(mode="json") for block in outcome.content]
        return events.tool_result(call.id, content, is_error=outcome.is_error)

    async def _cancel(self, session_id: str, tool_use_id: str) -> None:
        """Ask the sandbox-manager to stop a running call (best effort: failures are logged)."""
        if self._sandbox is None:
            return
        fields = _fields(session_id, tool_use_id=tool_use_id)
        try:
            async with asyncio.timeout(self._cancel_timeout_s):
                cancelled = await self._sandbox.cancel(sandbox.Cancel(session_id=session_id, tool_use_id=tool_use_id))
        except (SandboxError, TimeoutError) as exc:
            logger.warning("could not cancel the tool call: %s", exc, extra=fields)
            return
        logger.info("cancel sent", extra=_fields(session_id, tool_use_id=tool_use_id, cancelled=cancelled.cancelled))

    async def _start_provisioning(self, session_id: str, fold: SessionFold, turn: _TurnState) -> None:
        """Start the session's sandbox in the background (once per run) if its agent has built-in tools."""
        if turn.provisioning is not None or self._sandbox is None:
            return
        if not toolbox(_agent(fold.session)).needs_sandbox:
            return
        environment = await self._environment(fold, turn)
        if environment is None or not isinstance(environment.get("id"), str):
            logger.info("no environment to provision a sandbox from", extra=_fields(session_id))
            return
        config = environment.get("config")
        request = sandbox.Provision(
            session_id=session_id,
            environment_id=environment["id"],
            environment_config=config if isinstance(config, dict) else {},
        )
        turn.provisioning = asyncio.create_task(self._provision(request))

    async def _provision(self, request: sandbox.Provision) -> None:
        assert self._sandbox is not None
        fields = _fields(request.session_id, environment_id=request.environment_id)
        try:
            provisioned = await self._sandbox.provision(request)
        except SandboxError as err:
            logger.warning("provisioning the sandbox failed: %s", err.message, extra=fields)
        except Exception:  # a background task: never let a failure go unseen, never let it end the run
            logger.warning("provisioning the sandbox failed", extra=fields, exc_info=True)
        else:
            logger.info(
                "sandbox provisioned",
                extra=_fields(
                    request.session_id,
                    container_id=provisioned.container_id,
                    ready_ms=provisioned.ready_ms,
                    from_pool=provisioned.from_pool,
                    notices=provisioned.notices,
                ),
            )

    async def _model_turn(
        self,
        session_id: str,
        lease: HeldLease,
        log: SessionLog,
        turn: _TurnState,
        prelude: list[EventDict],
    ) -> int:
        """One model request (retried within the turn); returns the stream sequence of its last append."""
        box = toolbox(_agent(log.fold.session))
        attempt = 0
        level = 0
        while True:
            attempt += 1
            if turn.interrupted.is_set():
                idle = events.status_idle("end_turn")
                return (await self._append(session_id, lease, turn, [*prelude, idle])).last_seq
            start = events.model_request_start()
            started = await self._append(session_id, lease, turn, [*prelude, start])
            start_id = _stored_id(started, start)
            prelude = []
            self._crash(crashpoints.AFTER_MODEL_REQUEST_START)
            await log.reach(started.last_seq)  # the request sees the log as it stood at its start
            preview = Preview(self._deltas, session_id, events.new_event_id())
            try:
                request = model_request(log.fold.session, log.fold.messages(), max_tokens=self._max_tokens)
                if self._compactor is not None:
                    prepared = await self._compactor.prepare(
                        request, log.fold.conversation, limit=turn.context_limit, level=level
                    )
                    if prepared.exhausted:
                        return await self._compaction_limit(session_id, lease, turn, start_id)
                    if prepared.events:
                        # Folded like any record: the next step, and any harness resuming later, sees it.
                        await log.reach((await self._append(session_id, lease, turn, prepared.events)).last_seq)
                    request = prepared.request
                result = await self._traced_stream(session_id, request, preview, turn.interrupted)
            except ModelError as err:
                maximum = prompt_too_long(err.message) if self._compactor is not None else None
                if maximum is not None:
                    # Too long for the model: compact (harder, once the limit is known) and ask again.
                    level = level + 1 if turn.context_limit is not None and maximum >= turn.context_limit else level
                    turn.context_limit = maximum
                    logger.info("prompt too long; compacting", extra=_fields(session_id, maximum=maximum, level=level))
                    await self._append(session_id, lease, turn, [events.model_request_end(start_id, is_error=True)])
                    if level > _MAX_COMPACTION_LEVEL:
                        return await self._compaction_limit(session_id, lease, turn, None)
                    attempt -= 1
                    continue
                retry_status = self._policy.status(attempt, retryable=err.retryable)
                logger.warning(
                    "model request failed: %s",
                    err.message,
                    extra=_fields(session_id, attempt=attempt, error_type=err.error_type, retry_status=retry_status),
                )
                failed = [
                    events.model_request_end(start_id, is_error=True),
                    events.session_error(err.error_type, err.message, retry_status),
                ]
                if retry_status != "retrying":
                    ended = [*failed, events.status_idle("retries_exhausted")]
                    return (await self._append(session_id, lease, turn, ended)).last_seq
                # The session waits for the retry as ``rescheduling``, and runs again as it starts.
                await self._append(session_id, lease, turn, [*failed, events.status_rescheduled()])
                await self._pause(self._policy.delay(attempt), turn.interrupted)
                # An interrupt during the wait ends the turn from ``rescheduling`` (the idle just below).
                prelude = [] if turn.interrupted.is_set() else [events.status_running()]
                continue
            closing: list[EventDict] = []
            if result.texts:
                closing.append(events.agent_message(preview.event_id, result.texts))
            if isinstance(result, Interrupted):
                logger.info("turn interrupted", extra=_fields(session_id))
                closing.append(events.model_request_end(start_id))
                closing.append(events.status_idle("end_turn"))
            else:
                calls = reply_events(box, result.tool_uses)
                closing += calls
                closing.append(events.model_request_end(start_id, usage=result.usage))
                if not calls:
                    closing.append(events.status_idle("end_turn"))
            self._crash(crashpoints.BEFORE_TURN_END)
            appended = await self._append(session_id, lease, turn, closing)
            self._crash(crashpoints.AFTER_TURN_END)
            return appended.last_seq

    async def _compaction_limit(self, session_id: str, lease: HeldLease, turn: _TurnState, start_id: str | None) -> int:
        """End the turn: the conversation is too long for the model and nothing more can be compacted."""
        logger.warning("nothing more to compact; ending the turn", extra=_fields(session_id))
        error = events.session_error(
            "compaction_limit_reached_error",
            "The conversation is too long for the model's context window and nothing more can be compacted "
            "(the newest input alone may be too large). Send a shorter message, or start a new session.",
            "exhausted",
        )
        batch = [events.model_request_end(start_id, is_error=True)] if start_id is not None else []
        batch += [error, events.status_idle("retries_exhausted")]
        return (await self._append(session_id, lease, turn, batch)).last_seq

    async def _traced_stream(
        self, session_id: str, request: ModelRequest, preview: Preview, interrupted: asyncio.Event
    ) -> ModelReply | Interrupted:
        """``_stream`` inside a GenAI client span (``chat <model>``)."""
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": request.model,
            "gen_ai.request.max_tokens": request.max_tokens,
            "corral.session_id": session_id,
        }
        span_name = f"chat {request.model}"
        with _tracer.start_as_current_span(span_name, kind=trace.SpanKind.CLIENT, attributes=attributes) as span:
            try:
                result = await self._stream(request, preview, interrupted)
            except ModelError as err:
                span.set_status(trace.Status(trace.StatusCode.ERROR, err.error_type))
                span.set_attribute("error.type", err.error_type)
                raise
            if isinstance(result, Interrupted):
                span.set_attribute("corral.interrupted", True)
            else:
                span.set_attribute("gen_ai.usage.input_tokens", result.usage.input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", result.usage.output_tokens)
                if result.stop_reason:
                    span.set_attribute("gen_ai.response.finish_reasons", [result.stop_reason])
            return result

    async def _stream(
        self, request: ModelRequest, preview: Preview, interrupted: asyncio.Event
    ) -> ModelReply | Interrupted:
        async def on_text(index: int, text: str) -> None:
            first = not preview.texts
            await preview.on_text(index, text)
            if first:
                self._crash(crashpoints.MID_STREAM)

        streaming = asyncio.create_task(self._model.stream(request, on_text))
        stopping = asyncio.create_task(interrupted.wait())
        try:
            await asyncio.wait({streaming, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, stopping):
                task.cancel()
            await asyncio.gather(streaming, stopping, return_exceptions=True)
        if streaming.cancelled():
            return Interrupted(preview.texts)
        return streaming.result()

    async def _pause(self, delay: float, interrupted: asyncio.Event) -> None:
        """Back off for ``delay`` seconds, or less if an interrupt comes in."""
        sleeping = asyncio.ensure_future(self._sleep(delay))
        stopping = asyncio.create_task(interrupted.wait())
        try:
            await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, stopping):
                task.cancel()
            await asyncio.gather(sleeping, stopping, return_exceptions=True)
