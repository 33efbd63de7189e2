"""Deciding what to answer to one Messages request: a scripted turn, or the default reply."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corral.embedded_model.request import MessagesRequest
from corral.embedded_model.script import (
    BlockSpec,
    ErrorSpec,
    ScenarioBook,
    StopReason,
    TextBlockSpec,
    ToolUseBlockSpec,
    Turn,
)

GREETING = "Hello from Corral's embedded model."
SUMMARY_REQUEST_PREFIX = "Summarise the conversation"
"""A request whose system prompt starts so is a compaction summary request (the harness's)."""
SUMMARY_QUOTE_CHARS = 300
TOKENS_PER_TOOL_USE = 10
CHARACTERS_PER_TOKEN = 4


@dataclass(frozen=True)
class Reply:
    """One answer, independent of whether it is sent as JSON or as an event stream."""

    scenario: str | None
    turn_index: int
    content: tuple[BlockSpec, ...] = ()
    stop_reason: StopReason = "end_turn"
    input_tokens: int = 1
    output_tokens: int = 1
    first_byte_delay_ms: int = 0
    chunk_delay_ms: int = 0
    error: ErrorSpec | None = None


def default_text(request: MessagesRequest) -> str:
    said = request.last_user_text
    return f'{GREETING} You said: "{said}"' if said else GREETING


def estimate_input_tokens(request: MessagesRequest) -> int:
    return max(1, request.input_characters // CHARACTERS_PER_TOKEN)


def estimate_output_tokens(content: Sequence[BlockSpec]) -> int:
    words = sum(len(b.text.split()) for b in content if isinstance(b, TextBlockSpec))
    tools = sum(1 for b in content if isinstance(b, ToolUseBlockSpec))
    return max(1, words + TOKENS_PER_TOOL_USE * tools)


def summary_text(request: MessagesRequest) -> str:
    """The reply to a summary request: the start and the end of what it was asked to summarise, quoted."""
    said = " ".join(request.last_user_text.split())
    if len(said) > 2 * SUMMARY_QUOTE_CHARS:
        said = f"{said[:SUMMARY_QUOTE_CHARS]} [...] {said[-SUMMARY_QUOTE_CHARS:]}"
    return f'Summary (quoted by the embedded model): "{said}"'


def prompt_too_long(request: MessagesRequest, max_input_tokens: int | None) -> str | None:
    """The real API's message for a prompt over ``max_input_tokens``, or ``None`` if it fits."""
    tokens = estimate_input_tokens(request)
    if max_input_tokens is None or tokens <= max_input_tokens:
        return None
    return f"prompt is too long: {tokens} tokens > {max_input_tokens} maximum"


def plan_reply(request: MessagesRequest, book: ScenarioBook) -> Reply:
    """Pick the reply for a request; counts the attempt against any ``fail_times``."""
    turn_index = request.turn_index
    if request.system_text.startswith(SUMMARY_REQUEST_PREFIX):
        return _text_reply(request, None, turn_index, summary_text(request))
    match = book.match(request.first_user_text, turn_index)
    if match is None:
        return _text_reply(request, None, turn_index, default_text(request))
    turn = match.turn
    name = match.scenario.name
    if turn is None:
        return _text_reply(request, name, turn_index, f"(script for {name} is exhausted)")
    if book.should_fail(match):
        return Reply(
            scenario=name,
            turn_index=turn_index,
            first_byte_delay_ms=turn.first_byte_delay_ms,
            error=turn.error,
        )
    return _scripted_reply(request, name, turn_index, turn)


def _text_reply(request: MessagesRequest, scenario: str | None, turn_index: int, text: str) -> Reply:
    content = (TextBlockSpec(type="text", text=text),)
    return Reply(
        scenario=scenario,
        turn_index=turn_index,
        content=content,
        input_tokens=estimate_input_tokens(request),
        output_tokens=estimate_output_tokens(content),
    )


def _scripted_reply(request: MessagesRequest, scenario: str, turn_index: int, turn: Turn) -> Reply:
    usage = turn.usage
    input_tokens = usage.input_tokens if usage is not None else None
    output_tokens = usage.output_tokens if usage is not None else None
    return Reply(
        scenario=scenario,
        turn_index=turn_index,
        content=tuple(turn.content),
        stop_reason=turn.effective_stop_reason,
        input_tokens=estimate_input_tokens(request) if input_tokens is None else input_tokens,
        output_tokens=estimate_output_tokens(turn.content) if output_tokens is None else output_tokens,
        first_byte_delay_ms=turn.first_byte_delay_ms,
        chunk_delay_ms=turn.chunk_delay_ms,
    )
