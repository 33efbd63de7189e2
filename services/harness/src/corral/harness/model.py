"""The model port: what a turn asks the model for and what it gets back, errors included.

The adapter over the Messages API is ``corral.harness.messagesmodel``; ``corral.harness.
deferredmodel`` loads it (and its HTTP client) in the background once the harness is ready.
A failure reaches the driver as a ``ModelError`` whose ``error_type`` is a ``session.error`` type
and whose message is safe to show (no key, no request body).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from corral.contracts.api.events import ModelUsage, SessionErrorType
from corral.harness.messageblocks import ChatMessage

TextSink = Callable[[int, str], Awaitable[None]]
"""Called with (text block index in the reply, chunk) as text streams in."""


@dataclass(frozen=True)
class ModelRequest:
    model: str
    messages: list[ChatMessage]
    max_tokens: int
    system: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    """Messages-API tool definitions (``corral.harness.tools``); none means the request has no ``tools``."""


@dataclass(frozen=True)
class ToolRequest:
    """A ``tool_use`` block of a reply: the tool's name and its input as the model wrote it."""

    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class ModelReply:
    """The non-empty text blocks of the reply, in order (deltas concatenate to a prefix of each), and
    its ``tool_use`` blocks, in order."""

    texts: tuple[str, ...]
    usage: ModelUsage = field(default_factory=ModelUsage)
    stop_reason: str | None = None
    tool_uses: tuple[ToolRequest, ...] = ()


@dataclass(frozen=True)
class Summary:
    """A one-off request's text and the tokens it used."""

    text: str
    usage: ModelUsage = field(default_factory=ModelUsage)


class ModelError(Exception):
    """A failed model request. ``retryable=False`` means asking again cannot help (bad request, auth)."""

    def __init__(
        self, error_type: SessionErrorType, message: str, *, retryable: bool, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.error_type: SessionErrorType = error_type
        self.message = message
        self.retryable = retryable
        self.status = status


class Model(Protocol):
    async def stream(self, request: ModelRequest, on_text: TextSink) -> ModelReply:
        """Run one request, calling ``on_text`` per text chunk; raises ``ModelError``."""
        ...
