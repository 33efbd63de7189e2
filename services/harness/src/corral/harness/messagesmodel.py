"""The model port's ``anthropic`` adapter: one streamed Messages request, errors mapped.

The adapter never retries (the client is built with ``max_retries=0``): the turn driver retries
visibly, appending a ``session.error`` per failed attempt. Importing this module imports the SDK
(about 40 MB of the harness's memory): ``corral.harness.deferredmodel`` does it on the first request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, cast

import anthropic
import httpx2
from anthropic.lib.streaming import AsyncMessageStreamManager
from anthropic.types import (
    Message,
    MessageTokensCount,
    RawContentBlockDeltaEvent,
    RawMessageStreamEvent,
    TextBlock,
    TextDelta,
    ToolUseBlock,
)
from opentelemetry import trace

from corral import telemetry
from corral.contracts.api.events import ModelUsage
from corral.contracts.text import well_formed
from corral.harness import metrics
from corral.harness.model import ModelError, ModelReply, ModelRequest, Summary, TextSink, ToolRequest
from corral.harness.requestbody import count_body, stream_body

if TYPE_CHECKING:
    from anthropic.types import MessageParam

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)

_MESSAGE_LIMIT = 300
_TERMINAL_STATUSES = frozenset({400, 401, 402, 403, 404, 405, 413, 422})
_STREAM_HEADERS = {"x-stainless-helper-method": "stream", "x-stainless-stream-helper": "messages"}
"""What ``client.messages.stream`` adds to the client's own headers (its helper telemetry)."""


def _clip(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def classify(exc: anthropic.AnthropicError, *, secrets: Sequence[str] = ()) -> ModelError:
    """Map an SDK exception to the ``session.error`` it becomes.

    429 (or a ``rate_limit_error`` body) → ``model_rate_limited_error``; 529 (or an
    ``overloaded_error`` body, as sent mid-stream) → ``model_overloaded_error``; 402 →
    ``billing_error``; anything else → ``model_request_failed_error``. Client errors that asking again
    cannot fix (400, 401, 403, 404, ...) are not retryable; 408, 409, 429, 5xx, connection
    failures and timeouts are.
    """
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        body_type = exc.type or ""
        detail = f": {exc.api_message}" if exc.api_message else ""
        described = _clip(f"The model API answered {status} {body_type}{detail}".replace("  ", " "), secrets)
        if status == 429 or body_type == "rate_limit_error":
            return ModelError("model_rate_limited_error", described, retryable=True, status=status)
        if status == 529 or body_type == "overloaded_error":
            return ModelError("model_overloaded_error", described, retryable=True, status=status)
        if status == 402 or body_type == "billing_error":
            return ModelError("billing_error", described, retryable=False, status=status)
        retryable = status not in _TERMINAL_STATUSES and body_type not in (
            "invalid_request_error",
            "authentication_error",
            "permission_error",
            "not_found_error",
        )
        return ModelError("model_request_failed_error", described, retryable=retryable, status=status)
    if isinstance(exc, anthropic.APITimeoutError):
        return ModelError("model_request_failed_error", "The model API did not answer in time.", retryable=True)
    if isinstance(exc, anthropic.APIConnectionError):
        return ModelError("model_request_failed_error", "Could not connect to the model API.", retryable=True)
    return ModelError(
        "model_request_failed_error",
        _clip(f"The model request failed ({type(exc).__name__}).", secrets),
        retryable=True,
    )


def _usage(usage: anthropic.types.Usage) -> ModelUsage:
    return ModelUsage(
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
        cache_read_input_tokens=usage.cache_read_input_tokens or 0,
    )


class AnthropicModel:
    """``Model`` over ``anthropic.AsyncAnthropic`` (build the client with ``max_retries=0``).

    ``secrets`` are strings that must never appear in an error message (the API key).
    """

    def __init__(self, client: anthropic.AsyncAnthropic, *, secrets: Sequence[str] = ()) -> None:
        self._client = client
        self._secrets = tuple(secrets)
        self._counting = True
        #: The model endpoint's state as the last request found it (``ok`` until one fails for the
        #: endpoint's sake: unreachable, overloaded, rate limited, 5xx, key refused), for health.
        self.state = "ok"

    async def close(self) -> None:
        """Close the client (its connection pool)."""
        await self._client.close()

    async def count_tokens(self, request: ModelRequest) -> int | None:
        """The Messages API's ``count_tokens`` answer; ``None`` when it fails. A server without the
        endpoint (404) is not asked again."""
        if not self._counting:
            return None
        body = count_body(model=request.model, messages=request.messages, system=request.system, tools=request.tools)
        try:
            # What ``client.messages.count_tokens(...)`` sends, pre-encoded (see ``_open_stream``).
            counted = await self._client.post("/v1/messages/count_tokens", cast_to=MessageTokensCount, content=body)
        except anthropic.NotFoundError:
            logger.info("the model server has no count_tokens endpoint; estimating request sizes")
            self._counting = False
            return None
        except anthropic.AnthropicError as exc:
            logger.warning("count_tokens failed: %s", classify(exc, secrets=self._secrets).message)
            return None
        return counted.input_tokens

    async def summarise(self, request: ModelRequest) -> Summary:
        """The text of one non-streamed request (a compaction summary); raises ``ModelError``."""
        with metrics.model_call(request.model) as call:
            summary = await self._summarise(request)
            call.usage = summary.usage
            return summary

    async def stream(self, request: ModelRequest, on_text: TextSink) -> ModelReply:
        """One streamed request (a turn's), calling ``on_text`` per text chunk; raises ``ModelError``."""
        with metrics.model_call(request.model) as call:
            reply = await self._stream(request, on_text)
            call.usage = reply.usage
            return reply

    async def _summarise(self, request: ModelRequest) -> Summary:
        system: str | anthropic.Omit = request.system if request.system else anthropic.omit
        try:
            message = await self._client.messages.create(
                model=request.model,
                system=system,
                messages=cast("list[MessageParam]", request.messages),
                max_tokens=request.max_tokens,
            )
        except anthropic.AnthropicError as exc:
            raise classify(exc, secrets=self._secrets) from None
        texts = [well_formed(block.text) for block in message.content if isinstance(block, TextBlock)]
        return Summary("\n".join(str(text) for text in texts), _usage(message.usage))

    def _request_span(self, path: str) -> AbstractContextManager[trace.Span]:
        """The HTTP client span of a request to the model server, under the GenAI span of the model
        request (the client's own ``messages`` helpers make one; a pre-encoded ``post`` does not)."""
        url = self._client.base_url
        return _tracer.start_as_current_span(
            "POST",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "http.request.method": "POST",
                "server.address": url.host,
                "server.port": url.port or (443 if url.scheme == "https" else 80),
                "url.path": path,
            },
        )

    def _open_stream(self, request: ModelRequest) -> AsyncMessageStreamManager[None]:
        """What ``client.messages.stream(...)`` opens for ``request``, its body given ready-encoded
        (``corral.harness.requestbody``): the client sends ``content`` as it is instead of copying and
        walking the whole conversation first, so a request costs the same however long the session.
        Headers, the SSE decoding, the errors raised and the reply's accumulation are the client's."""
        body = stream_body(
            model=request.model,
            messages=request.messages,
            max_tokens=request.max_tokens,
            system=request.system,
            tools=request.tools,
        )
        opened = self._client.post(
            "/v1/messages",
            cast_to=Message,
            content=body,
            options={"headers": _STREAM_HEADERS},
            stream=True,
            stream_cls=anthropic.AsyncStream[RawMessageStreamEvent],
        )
        return AsyncMessageStreamManager(opened)

    async def _stream(self, request: ModelRequest, on_text: TextSink) -> ModelReply:
        ordinals: dict[int, int] = {}
        try:
            with self._request_span("/v1/messages"):
                async with self._open_stream(request) as stream:
                    async for event in stream:
                        if (
                            isinstance(event, RawContentBlockDeltaEvent)
                            and isinstance(event.delta, TextDelta)
                            and event.delta.text
                        ):
                            ordinal = ordinals.setdefault(event.index, len(ordinals))
                            await on_text(ordinal, well_formed(event.delta.text))
                    final = await stream.get_final_message()
        except anthropic.AnthropicError as exc:
            error = classify(exc, secrets=self._secrets)
            if error.retryable or error.status in (401, 403):
                status = f", HTTP {error.status}" if error.status else ""
                self.state = f"failing: the last request failed ({error.error_type}{status})"
            else:
                self.state = "ok"  # it answered; the request was at fault
            raise error from None
        except httpx2.TransportError as exc:
            # Once the reply has started the client raises its transport's own error (a connection
            # cut mid-reply), not an AnthropicError: asking again can succeed.
            self.state = f"failing: the last reply was cut off ({type(exc).__name__})"
            raise ModelError(
                "model_request_failed_error",
                f"The connection to the model API broke during its reply ({type(exc).__name__}).",
                retryable=True,
            ) from None
        self.state = "ok"
        # A reply is text from outside: a lone surrogate (valid JSON, not UTF-8) could be neither
        # appended nor streamed, so it becomes U+FFFD here.
        texts = tuple(well_formed(block.text) for block in final.content if isinstance(block, TextBlock) and block.text)
        tool_uses = tuple(
            ToolRequest(
                name=well_formed(block.name),
                input=well_formed(dict(block.input)) if isinstance(block.input, dict) else {},
            )
            for block in final.content
            if isinstance(block, ToolUseBlock)
        )
        return ModelReply(texts=texts, usage=_usage(final.usage), stop_reason=final.stop_reason, tool_uses=tool_uses)
