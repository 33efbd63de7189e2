"""The model port over the Messages API (``corral.harness.messagesclient``): a turn's streamed
request, a compaction's plain one, and ``count_tokens``.

It never retries: the turn driver retries visibly, appending a ``session.error`` per failed attempt.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace

from corral import telemetry
from corral.contracts.api.events import ModelUsage
from corral.contracts.text import well_formed
from corral.harness import metrics
from corral.harness.messagesclient import MessagesClient
from corral.harness.model import ModelError, ModelReply, ModelRequest, Summary, TextSink
from corral.harness.replyfold import ReplyFold, token_counts
from corral.harness.requestbody import count_body, encode, stream_body

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)


class MessagesModel:
    """``Model`` (and what the compactor asks: ``count_tokens``, ``summarise``) over one endpoint."""

    def __init__(self, client: MessagesClient) -> None:
        self._client = client
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
            counted = await self._client.post("/v1/messages/count_tokens", body)
        except ModelError as exc:
            if exc.status == 404:
                logger.info("the model server has no count_tokens endpoint; estimating request sizes")
                self._counting = False
            else:
                logger.warning("count_tokens failed: %s", exc.message)
            return None
        tokens = counted.get("input_tokens") if isinstance(counted, dict) else None
        return tokens if isinstance(tokens, int) else None

    async def summarise(self, request: ModelRequest) -> Summary:
        """The text of one non-streamed request (a compaction summary); raises ``ModelError``."""
        with metrics.model_call(request.model) as call:
            fields: dict[str, Any] = {"max_tokens": request.max_tokens, "messages": list(request.messages)}
            fields["model"] = request.model
            if request.system:
                fields["system"] = request.system
            message = await self._client.post("/v1/messages", encode(fields).encode())
            blocks = message.get("content") if isinstance(message, dict) else None
            texts = [
                well_formed(str(block.get("text") or ""))
                for block in blocks or ()
                if isinstance(block, dict) and block.get("type") == "text"
            ]
            usage = ModelUsage(**token_counts(message.get("usage") if isinstance(message, dict) else None))
            summary = Summary("\n".join(texts), usage)
            call.usage = summary.usage
            return summary

    async def stream(self, request: ModelRequest, on_text: TextSink) -> ModelReply:
        """One streamed request (a turn's), calling ``on_text`` per text chunk; raises ``ModelError``."""
        with metrics.model_call(request.model) as call:
            reply = await self._stream(request, on_text)
            call.usage = reply.usage
            return reply

    def _request_span(self, path: str) -> AbstractContextManager[trace.Span]:
        """The HTTP client span of a request to the model server, under the GenAI span of the model
        request."""
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

    async def _stream(self, request: ModelRequest, on_text: TextSink) -> ModelReply:
        body = stream_body(
            model=request.model,
            messages=request.messages,
            max_tokens=request.max_tokens,
            system=request.system,
            tools=request.tools,
        )
        fold = ReplyFold()
        try:
            with self._request_span("/v1/messages"):
                async with self._client.events("/v1/messages", body) as events:
                    async for event in events:
                        chunk = fold.add(event)
                        if chunk is not None:
                            await on_text(*chunk)
            reply = fold.reply()
        except ModelError as error:
            if error.retryable or error.status in (401, 403):
                status = f", HTTP {error.status}" if error.status else ""
                self.state = f"failing: the last request failed ({error.error_type}{status})"
            else:
                self.state = "ok"  # it answered; the request was at fault
            raise
        self.state = "ok"
        return reply
