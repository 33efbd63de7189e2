"""One model request of a turn: built from the fold, compacted to fit, streamed, retried.

The request appends ``span.model_request_start``, streams the model (publishing ``event_start`` /
``event_delta`` previews), then appends the reply in ONE append: ``agent.message``, one
``agent.tool_use`` / ``agent.custom_tool_use`` per tool call, ``span.model_request_end``, and, when
the model called no tools, ``session.status_idle``. A harness killed mid-stream therefore leaves
only the start in the log, and the next lease holder closes it and asks the model again: exactly
one reply per request.

A failed request is appended as an error end plus a ``session.error`` (``retrying``, then
``exhausted``; ``exhausted`` at once when asking again cannot help). While it waits to retry, the
session is ``rescheduling`` (``session.status_rescheduled``) and it is ``running`` again
(``session.status_running``) as the retry starts. Before each request the ``Compactor`` makes the
conversation fit; "prompt is too long" compacts harder and asks again. A ``user.interrupt`` stops
the stream (the turn ends with what was written) and the backoff (the turn ends from
``rescheduling``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

from corral import telemetry
from corral.contracts import rpc
from corral.contracts.api.events import HarnessEvent
from corral.harness import budget, crashpoints, events
from corral.harness.compaction import Compactor
from corral.harness.context import prompt_too_long
from corral.harness.crashpoints import Crashpoint
from corral.harness.deltas import Deltas, Preview
from corral.harness.fold import SessionFold
from corral.harness.interrupts import Stop, unless_interrupted
from corral.harness.lease import Sleep
from corral.harness.mcp import mcp_tool_use
from corral.harness.mcptools import Listing
from corral.harness.messageblocks import ChatMessage
from corral.harness.model import Model, ModelError, ModelReply, ModelRequest, ToolRequest
from corral.harness.pricing import Price
from corral.harness.retry import RetryPolicy
from corral.harness.runstate import SessionRun, agent_of
from corral.harness.tools import Toolbox, toolbox

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)

_MAX_COMPACTION_LEVEL = 6
"""How many times a turn compacts harder after "prompt is too long" before it gives up."""


@dataclass(frozen=True)
class Interrupted:
    """A request stopped by ``user.interrupt``; ``texts`` is what had streamed."""

    texts: tuple[str, ...]


def _stored_id(appended: rpc.Appended, sent: HarnessEvent) -> str:
    """The id the store kept for ``sent`` (ours, unless the store assigns its own)."""
    for stored in appended.events:
        if stored.get("type") == sent.type and isinstance(stored.get("id"), str):
            return str(stored["id"])
    return sent.id


def model_request(
    session: dict[str, Any], messages: list[ChatMessage], *, max_tokens: int, mcp: Listing | None = None
) -> ModelRequest:
    """The Messages request for the session's agent snapshot (model, system, tools) and conversation.

    Raises:
        ModelError: the agent snapshot names no model (not retryable).
    """
    agent = agent_of(session)
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
        tools=toolbox(agent, mcp).definitions,
    )


def not_enabled(name: str, box: Toolbox) -> str:
    offered = ", ".join(definition["name"] for definition in box.definitions) or "none"
    return f"Tool {name!r} is not enabled for this agent. Tools available: {offered}."


def reply_events(box: Toolbox, calls: Sequence[ToolRequest]) -> list[HarnessEvent]:
    """The events for a reply's tool calls, in order, each with a fresh id (its Messages ``tool_use.id``).

    A built-in tool gets ``agent.tool_use`` with its policy's verdict, a custom tool
    ``agent.custom_tool_use``. A name the agent does not have (unknown, or disabled) still gets an
    ``agent.tool_use`` (``evaluated_permission: deny``, no ``evaluation``: refused before any policy
    applied), answered at once by an error ``agent.tool_result``, so the model hears about it.
    """
    logged: list[HarnessEvent] = []
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
        elif kind == "mcp":
            logged.append(mcp_tool_use(event_id, box.mcp[call.name], call.input))
        else:
            logged.append(
                events.tool_use(event_id, call.name, call.input, evaluated_permission="deny", evaluation=None)
            )
            logged.append(events.tool_error(event_id, not_enabled(call.name, box)))
    return logged


class ModelTurns:
    """Model requests of a session's turns: the model, its previews, the retry policy, compaction and
    the session's budget (checked before every request against ``prices``)."""

    def __init__(
        self,
        *,
        model: Model,
        deltas: Deltas,
        policy: RetryPolicy,
        max_tokens: int,
        compactor: Compactor | None,
        sleep: Sleep,
        crashpoint: Crashpoint,
        prices: Mapping[str, Price],
    ) -> None:
        self._prices = prices
        self._model = model
        self._deltas = deltas
        self._policy = policy
        self._max_tokens = max_tokens
        self._compactor = compactor
        self._sleep = sleep
        self._crash = crashpoint

    async def model_turn(self, run: SessionRun, prelude: list[HarnessEvent]) -> int:
        """One model request (retried within the turn); returns the stream sequence of its last append."""
        session_id, log, turn = run.session_id, run.log, run.turn
        box = toolbox(agent_of(log.fold.session), turn.mcp_tools)
        attempt = 0
        level = 0
        decided = True  # the step's first append is fenced on the log its decision saw
        while True:
            attempt += 1
            if turn.interrupted.is_set():
                idle = events.status_idle("end_turn")
                return (await run.append([*prelude, idle])).last_seq
            paused = self._budget_pause(run, log.fold)
            if paused:
                return (await run.append([*prelude, *paused])).last_seq
            start = events.model_request_start()
            started = await run.append([*prelude, start], decided=decided)
            decided = False
            start_id = _stored_id(started, start)
            prelude = []
            self._crash(crashpoints.AFTER_MODEL_REQUEST_START)
            await log.reach(started.last_seq)  # the request sees the log as it stood at its start
            preview = Preview(self._deltas, session_id, events.new_event_id())
            try:
                request = model_request(
                    log.fold.session, log.fold.messages(), max_tokens=self._max_tokens, mcp=turn.mcp_tools
                )
                if self._compactor is not None:
                    prepared = await self._compactor.prepare(
                        request, log.fold.conversation, limit=turn.context_limit, level=level
                    )
                    if prepared.exhausted:
                        return await self._compaction_limit(run, start_id)
                    if prepared.events:
                        # Folded like any record: the next step, and any harness resuming later, sees it.
                        await log.reach((await run.append(prepared.events)).last_seq)
                    request = prepared.request
                result = await self._traced_stream(session_id, request, preview, turn.interrupted)
            except ModelError as err:
                maximum = prompt_too_long(err.message) if self._compactor is not None else None
                if maximum is not None:
                    # Too long for the model: compact (harder, once the limit is known) and ask again.
                    level = level + 1 if turn.context_limit is not None and maximum >= turn.context_limit else level
                    turn.context_limit = maximum
                    logger.info("prompt too long; compacting", extra=run.fields(maximum=maximum, level=level))
                    await run.append([events.model_request_end(start_id, is_error=True)])
                    if level > _MAX_COMPACTION_LEVEL:
                        return await self._compaction_limit(run, None)
                    attempt -= 1
                    continue
                retry_status = self._policy.status(attempt, retryable=err.retryable)
                logger.warning(
                    "model request failed: %s",
                    err.message,
                    extra=run.fields(attempt=attempt, error_type=err.error_type, retry_status=retry_status),
                )
                failed = [
                    events.model_request_end(start_id, is_error=True),
                    events.session_error(err.error_type, err.message, retry_status),
                ]
                if retry_status != "retrying":
                    ended = [*failed, events.status_idle("retries_exhausted")]
                    return (await run.append(ended)).last_seq
                # The session waits for the retry as ``rescheduling``, and runs again as it starts.
                await run.append([*failed, events.status_rescheduled()])
                await unless_interrupted(self._sleep(self._policy.delay(attempt)), turn.interrupted)
                # An interrupt during the wait ends the turn from ``rescheduling`` (the idle just below).
                prelude = [] if turn.interrupted.is_set() else [events.status_running()]
                continue
            closing: list[HarnessEvent] = []
            if result.texts:
                closing.append(events.agent_message(preview.event_id, result.texts))
            if isinstance(result, Interrupted):
                logger.info("turn interrupted", extra=run.fields())
                closing.append(events.model_request_end(start_id))
                closing.append(events.status_idle("end_turn"))
            else:
                calls = reply_events(box, result.tool_uses)
                closing += calls
                closing.append(events.model_request_end(start_id, usage=result.usage))
                if log.fold.budget is not None:
                    spent = log.fold.spend.plus(request.model, result.usage.model_dump())
                    closing.append(events.session_usage(budget.usage_snapshot(spent, self._prices), log.fold.budget))
                if not calls:
                    closing.append(events.status_idle("end_turn"))
            self._crash(crashpoints.BEFORE_TURN_END)
            appended = await run.append(closing)
            self._crash(crashpoints.AFTER_TURN_END)
            return appended.last_seq

    def _budget_pause(self, run: SessionRun, fold: SessionFold) -> list[HarnessEvent]:
        """The events that pause the session instead of a model request its budget does not allow
        (``session.usage``, then ``session.status_idle`` with ``budget_reached``); none if it may go on."""
        model = fold.model
        verdict = budget.check(fold.budget, fold.spend, model, self._prices) if model is not None else None
        if verdict is None or not verdict.reached:
            return []
        logger.info(
            "budget reached; the session pauses before the model request",
            extra=run.fields(
                list_cost_cents=verdict.list_cost,
                max_list_cost_cents=verdict.max_list_cost,
                unpriced_models=list(verdict.unpriced),
            ),
        )
        if verdict.unpriced:
            logger.warning(
                "the session's budget cannot measure models with no list price; add them to "
                "CORRAL_HARNESS_MODEL_PRICES or remove the session's budget",
                extra=run.fields(unpriced_models=list(verdict.unpriced)),
            )
        usage = events.session_usage(budget.usage_snapshot(fold.spend, self._prices), fold.budget)
        return [usage, events.status_idle("budget_reached")]

    async def _compaction_limit(self, run: SessionRun, start_id: str | None) -> int:
        """End the turn: the conversation is too long for the model and nothing more can be compacted."""
        logger.warning("nothing more to compact; ending the turn", extra=run.fields())
        error = events.session_error(
            "compaction_limit_reached_error",
            "The conversation is too long for the model's context window and nothing more can be compacted "
            "(the newest input alone may be too large). Send a shorter message, or start a new session.",
            "exhausted",
        )
        batch = [events.model_request_end(start_id, is_error=True)] if start_id is not None else []
        batch += [error, events.status_idle("retries_exhausted")]
        return (await run.append(batch)).last_seq

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

        reply = await unless_interrupted(self._model.stream(request, on_text), interrupted)
        if reply is Stop.INTERRUPTED:
            return Interrupted(preview.texts)
        return reply
