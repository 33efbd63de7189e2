"""The per-session driver: while holding the lease, run turns until the session has nothing to do.

One turn: load the context, decide, append the status changes and a ``span.model_request_start``,
stream the model (publishing deltas), then append the reply, the span's end and
``session.status_idle`` in ONE append. A harness killed mid-stream therefore leaves only the start
in the log, and the next lease holder closes it and asks the model again: exactly one
``agent.message`` per request. A failed request is appended as an error end plus a
``session.error`` (``retrying``, then ``exhausted``, or ``terminal`` when asking again cannot help)
and retried with backoff within the turn.

The driver stops as soon as the lease is lost (no further append is even attempted), and stops a
streaming request when a ``user.interrupt`` is logged, ending the turn with what was written so far.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from corral import telemetry
from corral.contracts import rpc
from corral.harness import crashpoints, events
from corral.harness.conversation import rebuild
from corral.harness.crashpoints import Crashpoint, no_crash
from corral.harness.decide import Plan, decide, interrupted_after
from corral.harness.deltas import Deltas, Preview
from corral.harness.events import EventDict
from corral.harness.interrupts import WakeFeed
from corral.harness.lease import HeldLease, Sleep
from corral.harness.model import Model, ModelError, ModelReply, ModelRequest
from corral.harness.retry import RetryPolicy
from corral.harness.store import LeaseConflict, Store, StoreError, StoreRejected, StoreUnavailable

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)

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
    """Shared with the interrupt watcher: the log position the current turn decided on."""

    horizon: int | None = None
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)

    def begin(self, horizon: int) -> None:
        self.horizon = horizon
        self.interrupted.clear()


def _fields(session_id: str, **more: Any) -> dict[str, Any]:
    return {"fields": {"session_id": session_id, **more}}


def _stored_id(appended: rpc.Appended, sent: EventDict) -> str:
    """The id the store kept for ``sent`` (ours, unless the store assigns its own)."""
    for stored in appended.events:
        if stored.get("type") == sent["type"] and isinstance(stored.get("id"), str):
            return str(stored["id"])
    return str(sent["id"])


def model_request(session: dict[str, Any], log: Sequence[rpc.LoggedEvent], *, max_tokens: int) -> ModelRequest:
    """The Messages request for the session's agent snapshot and conversation.

    Raises:
        ModelError: the agent snapshot names no model (not retryable).
    """
    snapshot = session.get("agent")
    agent: dict[str, Any] = snapshot if isinstance(snapshot, dict) else {}
    model = agent.get("model")
    model_id = model.get("id") if isinstance(model, dict) else model
    if not isinstance(model_id, str) or not model_id:
        raise ModelError("model_request_failed_error", "The session's agent names no model.", retryable=False)
    system = agent.get("system")
    return ModelRequest(
        model=model_id,
        system=system if isinstance(system, str) and system else None,
        messages=rebuild(log),
        max_tokens=max_tokens,
    )


class SessionDriver:
    def __init__(
        self,
        *,
        store: Store,
        model: Model,
        deltas: Deltas,
        policy: RetryPolicy,
        max_tokens: int,
        wake_feed: WakeFeed | None = None,
        sleep: Sleep = asyncio.sleep,
        crashpoint: Crashpoint = no_crash,
        context_attempts: int = 5,
    ) -> None:
        self._store = store
        self._model = model
        self._deltas = deltas
        self._policy = policy
        self._max_tokens = max_tokens
        self._feed = wake_feed
        self._sleep = sleep
        self._crash = crashpoint
        self._context_attempts = context_attempts

    async def run(self, session_id: str, lease: HeldLease, *, min_seq: int = 0) -> Outcome:
        """Work on the session until nothing is pending; ``min_seq`` is a log position the
        context must have reached (the wake-up's), so a lagging read is never acted on."""
        turn = _TurnState()
        outcome = Outcome.LOST
        try:
            async with asyncio.TaskGroup() as tg:
                guard = tg.create_task(self._stop_when_lost(lease))
                watcher = tg.create_task(self._watch_interrupts(session_id, turn)) if self._feed else None
                try:
                    outcome = await self._run_turns(session_id, lease, turn, min_seq)
                finally:
                    guard.cancel()
                    if watcher is not None:
                        watcher.cancel()
        except* _LeaseLost:
            logger.warning("lease lost; stopped working on the session", extra=_fields(session_id))
            outcome = Outcome.LOST
        return outcome

    async def _stop_when_lost(self, lease: HeldLease) -> None:
        await lease.lost.wait()
        raise _LeaseLost

    async def _run_turns(self, session_id: str, lease: HeldLease, turn: _TurnState, min_seq: int) -> Outcome:
        try:
            while True:
                context = await self._load(session_id, min_seq)
                plan = decide(context.session, context.events)
                logger.info(
                    "decided",
                    extra=_fields(
                        session_id,
                        action=plan.action,
                        status=context.session.get("status"),
                        last_seq=context.last_seq,
                        statuses=list(plan.statuses),
                        orphans=list(plan.close_orphans),
                    ),
                )
                if plan.action == "nothing":
                    return Outcome.DONE
                turn.begin(context.last_seq)
                min_seq = await self._run_turn(session_id, lease, context, plan, turn)
        except LeaseConflict as exc:
            logger.warning("store refused our lease: %s", exc, extra=_fields(session_id))
            return Outcome.LOST
        except StoreUnavailable as exc:
            logger.warning("session-store unavailable: %s", exc, extra=_fields(session_id))
            return Outcome.RETRY_LATER
        except StoreRejected as exc:
            logger.error("session-store rejected the session's work: %s", exc, extra=_fields(session_id))
            return Outcome.REJECTED

    async def _load(self, session_id: str, min_seq: int) -> rpc.SessionContext:
        for attempt in range(1, self._context_attempts + 1):
            context = await self._store.context(session_id)
            if context.last_seq >= min_seq:
                return context
            logger.info(
                "context behind the log, reading again",
                extra=_fields(session_id, last_seq=context.last_seq, min_seq=min_seq),
            )
            await self._sleep(0.1 * attempt)
        raise StoreUnavailable(f"the session context stayed behind stream sequence {min_seq}")

    async def _append(self, session_id: str, lease: HeldLease, batch: Sequence[EventDict]) -> rpc.Appended:
        if lease.lost.is_set():
            raise _LeaseLost
        appended = await self._store.append(session_id, batch, lease=lease.proof())
        logger.debug(
            "appended", extra=_fields(session_id, types=[e["type"] for e in batch], last_seq=appended.last_seq)
        )
        return appended

    async def _run_turn(
        self, session_id: str, lease: HeldLease, context: rpc.SessionContext, plan: Plan, turn: _TurnState
    ) -> int:
        """One turn; returns the stream sequence of its last append."""
        # Statuses first: the store takes span events only while the session is running.
        prelude: list[EventDict] = [_STATUS_EVENTS[status]() for status in plan.statuses]
        prelude += [events.model_request_end(start, is_error=True) for start in plan.close_orphans]
        if plan.action == "end_turn":
            return (await self._append(session_id, lease, [*prelude, events.status_idle("end_turn")])).last_seq
        attempt = 0
        while True:
            attempt += 1
            if turn.interrupted.is_set():
                return (await self._append(session_id, lease, [*prelude, events.status_idle("end_turn")])).last_seq
            start = events.model_request_start()
            start_id = _stored_id(await self._append(session_id, lease, [*prelude, start]), start)
            prelude = []
            self._crash(crashpoints.AFTER_MODEL_REQUEST_START)
            preview = Preview(self._deltas, session_id, events.new_event_id())
            try:
                request = model_request(context.session, context.events, max_tokens=self._max_tokens)
                result = await self._traced_stream(session_id, request, preview, turn.interrupted)
            except ModelError as err:
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
                    return (await self._append(session_id, lease, ended)).last_seq
                await self._append(session_id, lease, failed)
                await self._pause(self._policy.delay(attempt), turn.interrupted)
                continue
            closing: list[EventDict] = []
            if isinstance(result, Interrupted):
                logger.info("turn interrupted", extra=_fields(session_id))
                if result.texts:
                    closing.append(events.agent_message(preview.event_id, result.texts))
                closing.append(events.model_request_end(start_id))
            else:
                if result.texts:
                    closing.append(events.agent_message(preview.event_id, result.texts))
                closing.append(events.model_request_end(start_id, usage=result.usage))
            closing.append(events.status_idle("end_turn"))
            self._crash(crashpoints.BEFORE_TURN_END)
            appended = await self._append(session_id, lease, closing)
            self._crash(crashpoints.AFTER_TURN_END)
            return appended.last_seq

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

    async def _watch_interrupts(self, session_id: str, turn: _TurnState) -> None:
        assert self._feed is not None
        try:
            async for _wake in self._feed.watch(session_id):
                horizon = turn.horizon
                if horizon is None or turn.interrupted.is_set():
                    continue
                try:
                    context = await self._store.context(session_id)
                except StoreError:
                    continue
                if interrupted_after(context.events, horizon):
                    logger.info("user.interrupt logged during the turn", extra=_fields(session_id))
                    turn.interrupted.set()
        except Exception:  # a broken watch must not end the turn; interrupts then wait for the turn's end
            logger.warning("stopped watching for interrupts", extra=_fields(session_id), exc_info=True)
