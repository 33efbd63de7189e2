"""The per-session driver: while holding the lease, take steps until the session has nothing to do.

The session's log is read straight from JetStream (``sessionlog``) and folded record by record
(``fold``) while the lease is held, starting from the fold this harness kept when it last let the
session go (``foldcache``), else from the session's snapshot when there is a usable one
(``snapshots``). Each step catches the fold up with the log's end, decides (``corral.harness.decide``,
from the fold of the log alone) and does one thing: a model request (``modelturn``), the tool calls
that can run now (``toolrun``), or an idle (``end_turn`` / ``requires_action``). Every step shares
the run's typed context (``runstate.SessionRun``) and appends through it.

The run ends only when a decision made on the whole log (caught up after the last append) finds
nothing to do, so input logged right after a ``session.status_idle`` is taken by the holder instead
of waiting for the lease to change hands; that decision's log position is left on the lease
(``HeldLease.settled_through``) for the release (see ``lease`` and ``wake``). The fold's snapshot is
written at a turn's end and when the run lets the session go, once enough events were folded since
the last one, in the background (``snapshots.SnapshotWriter``): no step waits for it.

The driver stops as soon as the lease is lost (no further append is even attempted), and when a
``user.interrupt`` is logged it stops a streaming request (ending the turn with what was written so
far) or cancels the running tool call (its result says it was interrupted; the next decision
closes the calls not yet run and ends the turn).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping

from corral.contracts.api.events import HarnessEvent
from corral.harness import events, metrics, snapshots
from corral.harness.compaction import Compactor
from corral.harness.crashpoints import Crashpoint, no_crash
from corral.harness.credentialhosts import CredentialHosts
from corral.harness.decide import Plan, plan
from corral.harness.deltas import Deltas
from corral.harness.environments import Environments
from corral.harness.fold import Decoded, SessionFold
from corral.harness.foldcache import FoldCache, Kept
from corral.harness.lease import HeldLease, Sleep
from corral.harness.ledger import TOOL_LIMIT_ERROR
from corral.harness.mcp import McpTools, answer_event
from corral.harness.model import Model
from corral.harness.modelturn import ModelTurns
from corral.harness.pricing import DEFAULT_PRICES, Price
from corral.harness.retry import RetryPolicy
from corral.harness.runstate import LeaseLost, SessionRun, TurnState, log_fields
from corral.harness.sandbox import Sandbox
from corral.harness.sessionlog import LogSource, SessionLog, following
from corral.harness.snapshots import Snapshots, SnapshotWriter
from corral.harness.store import LeaseConflict, LogMoved, Store, StoreRejected, StoreUnavailable
from corral.harness.toolrun import ToolRunner
from corral.harness.webtools import Web

logger = logging.getLogger(__name__)

_MAX_MOVES = 20
"""Decisions in a row a run makes again because the log moved on before their step acted
(``LogMoved``); past it the run ends and is retried later."""

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
        keep_folds: int = 64,
        sleep: Sleep = asyncio.sleep,
        crashpoint: Crashpoint = no_crash,
        reach_timeout_s: float = 10.0,
        cancel_timeout_s: float = 3.0,
        max_tool_uses: int | None = None,
        compactor: Compactor | None = None,
        prices: Mapping[str, Price] = DEFAULT_PRICES,
        mcp: McpTools | None = None,
        web: Web | None = None,
        credential_hosts: CredentialHosts | None = None,
    ) -> None:
        self._mcp = mcp
        self._store = store
        self._compactor = compactor
        self._log = log
        self._snapshots = snapshots
        self._snapshot_every = snapshot_every
        self._folds = FoldCache(keep_folds)
        self._reach_timeout_s = reach_timeout_s
        self.handoff_turns = 0
        """Turns started by a run that had to wait for the lease to change hands (health: the input
        was logged while another holder still held the session and let it go without taking it)."""
        self.takeover_turns = 0
        """Turns started by a run that waited for the lease until it expired (its holder died)."""
        self.resumed: dict[str, int] = {}
        """Runs started, by where their fold came from (``kept``: this harness's own, from its last run
        of the session; else a ``snapshots.Source``), for health."""
        self._max_tool_uses = max_tool_uses
        self._tools = ToolRunner(
            sandbox=sandbox,
            environments=environments,
            cancel_timeout_s=cancel_timeout_s,
            crashpoint=crashpoint,
            mcp=mcp,
            web=web,
            credential_hosts=credential_hosts,
        )
        self._model_turns = ModelTurns(
            model=model,
            deltas=deltas,
            policy=policy,
            max_tokens=max_tokens,
            compactor=compactor,
            sleep=sleep,
            crashpoint=crashpoint,
            prices=prices,
        )

    async def run(self, session_id: str, lease: HeldLease, *, min_seq: int = 0) -> Outcome:
        """Work on the session until nothing is pending; ``min_seq`` is a log position the fold
        must have reached (the wake-up's), so a lagging read is never acted on."""
        turn = TurnState()
        outcome = Outcome.LOST

        def on_record(decoded: Decoded) -> None:
            if decoded.raw.get("type") == "user.interrupt" and turn.notice(decoded.seq):
                logger.info("user.interrupt logged during the turn", extra=log_fields(session_id))

        writer: SnapshotWriter | None = None
        intact: SessionFold | None = None
        try:
            async with asyncio.TaskGroup() as tg:  # its end waits for a snapshot being written
                guard = tg.create_task(self._stop_when_lost(lease))
                try:
                    read: SessionLog | None = None
                    try:
                        async with self._followed(session_id, on_record) as (log, written_events, log_end):
                            read = log
                            writer = SnapshotWriter(
                                self._snapshots,
                                session_id,
                                tg,
                                every_events=self._snapshot_every,
                                written_events=written_events,
                            )
                            run = SessionRun(session_id=session_id, lease=lease, log=log, turn=turn, store=self._store)
                            outcome = await self._run_turns(run, max(min_seq, log_end), writer, looked=log_end > 0)
                    finally:
                        if read is not None and read.failed is None:  # not stopped part-way into a record
                            intact = read.fold
                except StoreUnavailable as exc:
                    logger.warning("session log unavailable: %s", exc, extra=log_fields(session_id))
                    outcome = Outcome.RETRY_LATER
                finally:
                    guard.cancel()
                    self._tools.stop_provisioning(turn)
        except* LeaseLost:
            logger.warning("lease lost; stopped working on the session", extra=log_fields(session_id))
            outcome = Outcome.LOST
        if intact is not None and writer is not None:
            # Kept for the session's next run here, once the snapshot write is over (its count is the
            # one the next run's writer starts from) and before the caller lets the lease go.
            self._folds.keep(session_id, Kept(intact, writer.written_events))
        return outcome

    async def logged_after(self, session_id: str, seq: int) -> bool:
        """Whether the session's log holds a record past stream sequence ``seq`` (one lookup)."""
        return await self._log.last_seq(session_id) > seq

    async def _stop_when_lost(self, lease: HeldLease) -> None:
        await lease.lost.wait()
        raise LeaseLost

    @contextlib.asynccontextmanager
    async def _followed(
        self, session_id: str, on_record: Callable[[Decoded], None]
    ) -> AsyncIterator[tuple[SessionLog, int, int]]:
        """The session's log, followed from the fold to start from: the one this harness kept from
        its last run of the session if the log still holds it, else the session's snapshot if usable
        (checked against the log). Yields the followed log, the fold's events when the session's
        snapshot was last written (or resumed from), and the log's last sequence when it was looked
        up on the way (0: it was not).

        A kept fold is followed at once, while the log is asked whether it still holds the fold's
        last record: the read starts during the lookups instead of after them. A kept fold the log
        no longer holds is dropped, with its read."""
        started = time.monotonic()
        kept = self._folds.take(session_id)
        if kept is not None:
            async with self._following(session_id, kept.fold, on_record) as log:
                log_end = await self._still_logged(session_id, kept.fold.last_seq)
                if log_end is not None:
                    self._resumed(session_id, "kept", kept.fold, started)
                    yield log, kept.snapshot_events, log_end
                    return
        max_result_chars = self._compactor.policy.max_result_chars if self._compactor is not None else None
        resumed = await snapshots.resume(session_id, self._snapshots, self._log, max_result_chars=max_result_chars)
        self._resumed(session_id, resumed.source, resumed.fold, started)
        async with self._following(session_id, resumed.fold, on_record) as log:
            yield log, resumed.fold.events, resumed.log_end

    def _following(
        self, session_id: str, fold: SessionFold, on_record: Callable[[Decoded], None]
    ) -> contextlib.AbstractAsyncContextManager[SessionLog]:
        return following(self._log, session_id, fold, on_record=on_record, reach_timeout_s=self._reach_timeout_s)

    async def _still_logged(self, session_id: str, seq: int) -> int | None:
        """The log's last sequence if the log still holds the kept fold's last record ``seq`` and no
        more than ``snapshot_every`` records were appended since (else a snapshot is likely nearer);
        ``None`` if the kept fold is not to be used. The two lookups go out together."""
        last, held = await asyncio.gather(self._log.last_seq(session_id), self._log.holds(session_id, seq))
        if seq <= last <= seq + self._snapshot_every and held:
            return last
        logger.info(
            "the fold kept from the last run is not used",
            extra=log_fields(session_id, kept_seq=seq, log_seq=last),
        )
        return None

    def _resumed(self, session_id: str, source: str, fold: SessionFold, started: float) -> None:
        self.resumed[source] = self.resumed.get(source, 0) + 1
        logger.info(
            "resumed the session's fold",
            extra=log_fields(
                session_id,
                source=source,
                seq=fold.last_seq,
                events=fold.events,
                resume_ms=round((time.monotonic() - started) * 1000, 1),
            ),
        )

    async def _run_turns(
        self, run: SessionRun, min_seq: int, snapshots: SnapshotWriter, *, looked: bool = False
    ) -> Outcome:
        """Decide and take steps until nothing is pending. Each decision first catches the fold up
        with the log's end; ``looked``: ``min_seq`` is an end already known, which the decision waits
        for instead of looking it up again (a round trip to NATS): the end looked up as the run
        started, then, within a turn, the sequence of the step's last append (the store stored it
        fenced on the log's end, so it was the end; what others log later is taken in as it arrives,
        as it would be after a lookup). The decision after a step that ended the turn looks the end
        up: input logged just after the idle is then taken by this run, not by a hand-off."""
        session_id, lease, log, turn = run.session_id, run.lease, run.log, run.turn
        fold = log.fold
        moved = 0
        try:
            while True:
                if looked:
                    await log.reach(min_seq)
                    looked = False
                else:
                    await log.catch_up(min_seq)
                if not fold.created or fold.deleted:
                    raise StoreRejected(f"session {session_id!r} no longer exists (its log has no creation record)")
                step = plan(fold.session, fold.ledger, owned=turn.owned, max_tool_uses=self._max_tool_uses)
                logger.info(
                    "decided",
                    extra=log_fields(
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
                    lease.settled_through = fold.last_seq
                    snapshots.offer(fold)
                    return Outcome.DONE
                turn.begin(fold.last_seq)
                turn.contested = not turn.owned and fold.status in ("running", "rescheduling")
                if step.action == "model_request" and lease.handed_off and not turn.owned and not turn.handoff_seen:
                    turn.handoff_seen = True
                    if lease.after_expiry:  # its holder died: a takeover, not a slow hand-off
                        self.takeover_turns += 1
                        logger.info("a turn starts after taking over an expired lease", extra=log_fields(session_id))
                    else:
                        self.handoff_turns += 1
                        logger.warning(
                            "a turn starts after waiting for the lease hand-off", extra=log_fields(session_id)
                        )
                if step.action == "model_request":
                    await self._tools.start_provisioning(session_id, fold, turn)
                try:
                    min_seq = await self._step(run, step)
                except LogMoved as exc:  # decided on a log that moved on before the step acted
                    metrics.DECISIONS_AGAIN.inc()
                    moved += 1
                    if moved > _MAX_MOVES:
                        raise StoreUnavailable(f"the log kept moving under {moved} decisions: {exc}") from exc
                    logger.info("the log moved on before the step acted; deciding again", extra=log_fields(session_id))
                    continue
                if not turn.owned:  # the step ended the turn
                    snapshots.offer(fold)
                else:  # its last append's sequence was the log's end when stored: no lookup needed
                    looked = True
        except LeaseConflict as exc:
            logger.warning("store refused our lease: %s", exc, extra=log_fields(session_id))
            return Outcome.LOST
        except StoreUnavailable as exc:
            logger.warning("session-store unavailable: %s", exc, extra=log_fields(session_id))
            return Outcome.RETRY_LATER
        except StoreRejected as exc:
            logger.error("session-store rejected the session's work: %s", exc, extra=log_fields(session_id))
            return Outcome.REJECTED

    async def _step(self, run: SessionRun, plan: Plan) -> int:
        """One step of a turn; returns the stream sequence of its last append."""
        # Statuses first: the store takes span and tool events only while the session is running.
        prelude: list[HarnessEvent] = [_STATUS_EVENTS[status]() for status in plan.statuses]
        prelude += [events.model_request_end(start, is_error=True) for start in plan.close_orphans]
        for tool_use_id in plan.cancel:
            await self._tools.cancel(run.session_id, tool_use_id)
        prelude += [answer_event(a) for a in plan.answers]
        if plan.action == "end_turn":
            return (await run.append([*prelude, events.status_idle("end_turn")])).last_seq
        if plan.action == "requires_action":
            idle = events.requires_action(plan.awaiting)
            return (await run.append([*prelude, idle])).last_seq
        if plan.action == "tool_limit":
            logger.warning("turn reached the tool call limit", extra=run.fields(limit=self._max_tool_uses))
            error = events.session_error(
                TOOL_LIMIT_ERROR,
                f"This turn made {self._max_tool_uses} tool calls, the most one turn may make here, so the model "
                "was not asked again. Send a message to let the agent continue.",
                "exhausted",
            )
            batch = [*prelude, error, events.status_idle("retries_exhausted")]
            return (await run.append(batch)).last_seq
        if plan.action == "tools":
            return await self._tools.run_tools(run, plan, prelude)
        if self._mcp is not None:  # the agent's MCP tools, listed (once per session) for the request
            prelude += await self._mcp.prepare(run)
        return await self._model_turns.model_turn(run, prelude)
