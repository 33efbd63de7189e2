"""Fitting a model request into the model's context window (the I/O around ``corral.harness.context``).

Before each model request the driver asks ``Compactor.prepare`` for the request to send. It sizes the
request (the estimate, and the model's ``count_tokens`` once the estimate reaches half the budget,
which also calibrates the estimate), and past the budget (``threshold`` x the context window, halved
per ``level``) compacts: clears old tool results, then, if still over, summarises the oldest turns
with a separate summary request. It reads the fold's conversation (``ConversationBuilder``: its
messages, its uncleared tool results, its cuts), never the log. What it did comes back as one
``agent.thread_context_compacted`` event for the driver to append: the request it returns is the
fold's conversation with that event folded, so a harness that wakes later (from a snapshot or from
scratch) rebuilds the same request from the log alone.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from corral.contracts.api.events import HarnessEvent
from corral.harness import events as event_builders
from corral.harness.budget import Tokens
from corral.harness.context import (
    KEEP_FRACTION,
    SUMMARY_SYSTEM,
    Estimator,
    compaction_details,
    context_window,
    plan_clearing,
    prompt_too_long,
    request_chars,
    summary_cut,
    transcript,
)
from corral.harness.conversation import COMPACTED, ConversationBuilder, Counted
from corral.harness.messageblocks import ChatMessage
from corral.harness.model import ModelError, ModelRequest, Summary

logger = logging.getLogger(__name__)

_SUMMARY_ATTEMPTS = 4
_RECOUNT_MARGIN = 0.05
"""Share of the budget left unused before a conversation counted once is counted again."""


class ContextModel(Protocol):
    async def count_tokens(self, request: ModelRequest) -> int | None:
        """The request's input tokens as the model counts them; ``None`` when it cannot say."""
        ...

    async def summarise(self, request: ModelRequest) -> Summary:
        """The text of a one-off (non-streamed) request and its usage; raises ``ModelError``."""
        ...


@dataclass(frozen=True)
class ContextPolicy:
    window_tokens: int | None = None
    """Overrides the per-model table (``corral.harness.context.CONTEXT_WINDOWS``)."""
    threshold: float = 0.8
    keep_tool_results: int = 3
    max_result_chars: int | None = 100_000
    summary_max_tokens: int = 2048
    count_tokens: bool = True


@dataclass(frozen=True)
class Prepared:
    request: ModelRequest
    events: tuple[HarnessEvent, ...] = ()
    """Compaction events to append before sending ``request``."""
    tokens: int = 0
    exhausted: bool = False
    """More compaction was needed and nothing more could be compacted."""


class Compactor:
    def __init__(self, model: ContextModel, policy: ContextPolicy, estimator: Estimator | None = None) -> None:
        self._model = model
        self.policy = policy
        self.estimator = estimator or Estimator()

    async def prepare(
        self, request: ModelRequest, conversation: ConversationBuilder, *, limit: int | None = None, level: int = 0
    ) -> Prepared:
        """The request to send for the fold's ``conversation`` (``request`` gives model, system, tools,
        max_tokens; its messages are replaced). ``conversation`` is not changed.

        ``limit``: a maximum the model itself named ("prompt is too long"); ``level``: how many times a
        request was refused with that limit already known (each level halves the budget).
        """
        policy = self.policy
        window = context_window(request.model, policy.window_tokens)
        if limit is not None:
            window = min(window, limit)
        budget = max(1, int(window * policy.threshold * 0.5**level))
        sized = dataclasses.replace(request, messages=conversation.messages())
        tokens = await self.measure(sized, conversation, budget)
        if tokens <= budget:
            return Prepared(sized, tokens=tokens)
        keep = max(0, policy.keep_tool_results - level)
        cleared = plan_clearing(
            conversation.tool_results(), excess_chars=self.estimator.chars(tokens - budget), keep=keep
        )
        trial = _folded(conversation, compaction_details(cleared=cleared))
        if cleared:
            tokens = await self.measure(dataclasses.replace(request, messages=trial.messages()), trial, budget)
        through: str | None = None
        summary: str | None = None
        used = Tokens()
        if tokens > budget:
            keep_chars = self.estimator.chars(int(budget * KEEP_FRACTION))
            cut = summary_cut(trial.cuts(), keep_chars=keep_chars)
            if cut is not None:
                summary = await self._summary(request.model, trial.head(cut.index), budget, used)
                through = cut.through if summary is not None else None
        if not cleared and summary is None:
            logger.info("nothing more to compact", extra={"fields": {"tokens": tokens, "budget": budget}})
            return Prepared(sized, tokens=tokens, exhausted=level > 0)
        details = compaction_details(cleared=cleared, through=through, summary=summary, summary_usage=used.usage())
        event = event_builders.context_compacted(details)
        final = conversation.copy()
        final.apply(event_builders.wire(event))
        compacted_request = dataclasses.replace(request, messages=final.messages())
        tokens = await self.measure(compacted_request, final, budget)
        logger.info(
            "context compacted",
            extra={
                "fields": {
                    "cleared": len(cleared),
                    "summarized_through": through,
                    "tokens": tokens,
                    "budget": budget,
                    "level": level,
                }
            },
        )
        return Prepared(compacted_request, events=(event,), tokens=tokens)

    async def measure(self, request: ModelRequest, conversation: ConversationBuilder, budget: int) -> int:
        """The size in tokens of ``request``, whose messages are ``conversation``'s: the estimate, or
        the model's count once it matters.

        Once counted, a conversation that only grew is not counted again while it surely fits: a
        token is at least one character, so the request holds at most the last count plus the
        characters added since (give or take what a filled-in answer replaced, a short placeholder:
        ``_RECOUNT_MARGIN`` of the budget covers it), and while that is within ``budget`` the decision
        is the one an exact count would give (what is returned then is the count plus the estimate of
        what was added). Counting at every step would cost a request the size of the conversation.
        """
        chars = request_chars(conversation.chars(), request.system, request.tools)
        estimate = self.estimator.tokens(chars)
        if not self.policy.count_tokens or estimate < budget / 2:
            return estimate
        known = conversation.counted
        if known is not None and known.model == request.model and known.chars <= chars:
            added = chars - known.chars
            if known.tokens + added <= budget * (1 - _RECOUNT_MARGIN):
                return known.tokens + self.estimator.tokens(added)
        counted = await self._model.count_tokens(request)
        if counted is None:
            return estimate
        self.estimator.calibrate(chars, counted)
        conversation.counted = Counted(request.model, chars, counted)
        return counted

    async def _summary(self, model: str, messages: Sequence[ChatMessage], budget: int, used: Tokens) -> str | None:
        """A summary of ``messages``, written in a separate context; ``None`` if even a clipped
        transcript is too long for the model. What the summary requests used is added to ``used``."""
        max_chars = max(1_000, self.estimator.chars(budget) - len(SUMMARY_SYSTEM) - 200)
        for _ in range(_SUMMARY_ATTEMPTS):
            text = "Conversation to summarise:\n\n" + transcript(messages, max_chars=max_chars)
            request = ModelRequest(
                model=model,
                system=SUMMARY_SYSTEM,
                messages=[{"role": "user", "content": [{"type": "text", "text": text}]}],
                max_tokens=self.policy.summary_max_tokens,
            )
            try:
                answer = await self._model.summarise(request)
                used.add(answer.usage.model_dump())
                summary = answer.text.strip()
            except ModelError as err:
                maximum = prompt_too_long(err.message)
                if maximum is None:
                    raise
                max_chars = min(max_chars // 2, self.estimator.chars(int(maximum * 0.8)))
                continue
            return summary or "(the summary came back empty)"
        return None


def _folded(conversation: ConversationBuilder, details: dict[str, object]) -> ConversationBuilder:
    """A copy of ``conversation`` with a compaction doing ``details`` folded in."""
    trial = conversation.copy()
    trial.apply({"type": COMPACTED, "id": "pending", "corral_compaction": details})
    return trial
