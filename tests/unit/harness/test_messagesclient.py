"""The Messages API client (``corral.harness.messagesclient``) and the fold of a streamed reply
(``corral.harness.replyfold``), through the adapter, against an in-process transport: the framing
of server-sent events as servers write it, replies cut short, errors that are not the API's own
JSON, and what a reply's blocks and usage become."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from corral.contracts.api.events import ModelUsage
from corral.harness.model import ModelError, ModelRequest, ToolRequest
from tests.unit.harness.test_model import KEY, adapter, message_stream, request, sse

EVENT_STREAM = {"content-type": "text/event-stream"}
START = {
    "type": "message_start",
    "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "usage": {"input_tokens": 5}},
}
STOP = [
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
    {"type": "message_stop"},
]


def answering(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    def handler(http_request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers=headers or EVENT_STREAM, content=body)

    return handler


async def streamed(handler: Any) -> tuple[list[tuple[int, str]], Any]:
    chunks: list[tuple[int, str]] = []

    async def on_text(index: int, chunk: str) -> None:
        chunks.append((index, chunk))

    model = adapter(handler)
    return chunks, await model.stream(request(), on_text)


async def failed(handler: Any) -> ModelError:
    model = adapter(handler)

    async def on_text(index: int, chunk: str) -> None:
        pass

    with pytest.raises(ModelError) as raised:
        await model.stream(request(), on_text)
    assert model.state.startswith("failing") == raised.value.retryable
    return raised.value


async def test_events_framed_with_crlf_comments_bare_data_and_split_data_lines_are_read() -> None:
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}
    body = (
        b": a comment the server keeps the connection alive with\r\n\r\n"
        + f"event: message_start\r\ndata: {json.dumps(START)}\r\n\r\n".encode()
        + b'event: content_block_start\r\ndata:{"type": "content_block_start", "index": 0,\r\n'
        + b'data: "content_block": {"type": "text", "text": ""}}\r\n\r\n'
        + b'event: ping\r\ndata: {"type": "ping"}\r\n\r\n'
        + f"event: content_block_delta\r\nid: 7\r\ndata: {json.dumps(delta)}\r\n\r\n".encode()
        + sse(*STOP).replace(b"\n", b"\r\n")
    )

    chunks, reply = await streamed(answering(body))

    assert chunks == [(0, "hi")]
    assert reply.texts == ("hi",)
    assert reply.usage == ModelUsage(input_tokens=5, output_tokens=2)


async def test_blocks_the_turn_does_not_use_are_passed_over_and_text_ordinals_count_text_blocks_only() -> None:
    frames: list[dict[str, Any]] = [
        START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "x"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": "Pre"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "fix"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "ls"}}},
        {"type": "content_block_stop", "index": 2},
        {"type": "content_block_start", "index": 3,
         "content_block": {"type": "tool_use", "id": "toolu_2", "name": "bash", "input": {}}},
        {"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{not json"}},
        {"type": "content_block_stop", "index": 3},
        {"type": "a_future_event", "index": 9},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
         "usage": {"output_tokens": 7, "input_tokens": 6, "cache_read_input_tokens": None}},
        {"type": "message_stop"},
    ]  # fmt: skip

    chunks, reply = await streamed(answering(sse(*frames)))

    assert chunks == [(0, "fix")]
    assert reply.texts == ("Prefix",)
    assert reply.tool_uses == (ToolRequest("bash", {"command": "ls"}), ToolRequest("bash", {}))
    assert reply.stop_reason == "tool_use"
    assert reply.usage == ModelUsage(input_tokens=6, output_tokens=7)


async def test_a_reply_that_ends_before_message_stop_is_a_retryable_error_not_a_short_reply() -> None:
    body = message_stream(["half a rep"]).split(b"event: message_delta")[0]

    error = await failed(answering(body))

    assert (error.error_type, error.retryable) == ("model_request_failed_error", True)
    assert "before it was complete" in error.message


class _Silent(httpx2.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield sse(START)
        raise httpx2.ReadTimeout("timed out")


async def test_a_reply_that_goes_silent_past_the_read_timeout_is_cut_off_and_retryable() -> None:
    def handler(http_request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers=EVENT_STREAM, stream=_Silent())

    error = await failed(handler)

    assert error.retryable and "ReadTimeout" in error.message


async def test_a_server_that_does_not_answer_in_time_is_a_retryable_timeout() -> None:
    def handler(http_request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectTimeout("timed out", request=http_request)

    error = await failed(handler)

    assert (error.message, error.retryable) == ("The model API did not answer in time.", True)


async def test_an_error_page_that_is_not_the_apis_json_keeps_its_status_and_text() -> None:
    page = b"<html><body>502 Bad Gateway</body></html>"

    error = await failed(answering(page, status=502, headers={"content-type": "text/html"}))

    assert (error.error_type, error.retryable, error.status) == ("model_request_failed_error", True, 502)
    assert "502 Bad Gateway" in error.message


async def test_an_error_event_that_echoes_the_key_is_redacted() -> None:
    body = sse(START, {"type": "error", "error": {"type": "api_error", "message": f"bad key {KEY}"}})

    error = await failed(answering(body))

    assert KEY not in error.message and "[redacted]" in error.message
    assert (error.status, error.retryable) == (200, True)


async def test_count_tokens_and_a_summary_are_plain_requests() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        sent.append((http_request.url.path, json.loads(http_request.content)))
        if http_request.url.path.endswith("/count_tokens"):
            return httpx2.Response(200, json={"input_tokens": 321})
        content = [
            {"type": "text", "text": "first"},
            {"type": "thinking", "thinking": "x"},
            {"type": "text", "text": "2"},
        ]
        usage = {"input_tokens": 40, "output_tokens": 8, "cache_read_input_tokens": None}
        return httpx2.Response(200, json={"type": "message", "content": content, "usage": usage})

    model = adapter(handler)
    asked = ModelRequest(model="claude-test", system="sum up", messages=request().messages, max_tokens=99)

    assert await model.count_tokens(asked) == 321
    summary = await model.summarise(asked)

    assert (summary.text, summary.usage) == ("first\n2", ModelUsage(input_tokens=40, output_tokens=8))
    assert [path for path, _ in sent] == ["/v1/messages/count_tokens", "/v1/messages"]
    assert sent[1][1] == {"max_tokens": 99, "messages": request().messages, "model": "claude-test", "system": "sum up"}
