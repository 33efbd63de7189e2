from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from corral.contracts.api.events import ModelUsage
from corral.harness.health import report
from corral.harness.messagesclient import MessagesClient, status_error
from corral.harness.messagesmodel import MessagesModel
from corral.harness.model import ModelError, ModelRequest, ToolRequest
from corral.harness.retry import RetryPolicy

KEY = "sk-ant-test-very-secret"


@pytest.mark.parametrize(
    ("status", "body_type", "error_type", "retryable"),
    [
        (429, "rate_limit_error", "model_rate_limited_error", True),
        (529, "overloaded_error", "model_overloaded_error", True),
        (200, "overloaded_error", "model_overloaded_error", True),  # an error event mid-stream
        (500, "api_error", "model_request_failed_error", True),
        (503, "api_error", "model_request_failed_error", True),
        (408, "timeout_error", "model_request_failed_error", True),
        (400, "invalid_request_error", "model_request_failed_error", False),
        (401, "authentication_error", "model_request_failed_error", False),
        (403, "permission_error", "model_request_failed_error", False),
        (404, "not_found_error", "model_request_failed_error", False),
        (402, "billing_error", "billing_error", False),
    ],
)
def test_status_errors_map_to_session_error_types(
    status: int, body_type: str, error_type: str, retryable: bool
) -> None:
    error = status_error(status, body_type, "nope")

    assert (error.error_type, error.retryable, error.status) == (error_type, retryable, status)
    assert str(status) in error.message


def test_error_messages_never_carry_the_api_key_and_stay_short() -> None:
    error = status_error(401, "authentication_error", f"invalid x-api-key {KEY} " + "x" * 1000, secrets=[KEY])

    assert KEY not in error.message
    assert "[redacted]" in error.message
    assert len(error.message) <= 300


def test_retry_delays_double_up_to_the_cap() -> None:
    policy = RetryPolicy(max_retries=5, backoff_s=1.0, max_backoff_s=5.0)

    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_retry_status_is_retrying_until_the_budget_is_spent_and_exhausted_when_retrying_cannot_help() -> None:
    policy = RetryPolicy(max_retries=2)

    assert [policy.status(n, retryable=True) for n in (1, 2, 3)] == ["retrying", "retrying", "exhausted"]
    assert policy.status(1, retryable=False) == "exhausted"  # no model error terminates a session


# --- the anthropic adapter, against an in-process transport ------------------------------------------


def sse(*frames: dict[str, Any]) -> bytes:
    return b"".join(f"event: {f['type']}\ndata: {json.dumps(f)}\n\n".encode() for f in frames)


def message_stream(*blocks: list[str]) -> bytes:
    frames: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test", "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 21, "output_tokens": 1, "cache_creation_input_tokens": None,
                          "cache_read_input_tokens": 3},
            },
        }
    ]  # fmt: skip
    for index, chunks in enumerate(blocks):
        frames.append({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
        frames += [
            {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": c}} for c in chunks
        ]
        frames.append({"type": "content_block_stop", "index": index})
    frames.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        }
    )
    frames.append({"type": "message_stop"})
    return sse(*frames)


def adapter(handler: Callable[[httpx2.Request], httpx2.Response]) -> MessagesModel:
    client = MessagesClient(base_url="http://model.test", api_key=KEY, transport=httpx2.MockTransport(handler))
    return MessagesModel(client)


def request(system: str | None = None) -> ModelRequest:
    return ModelRequest(
        model="claude-test",
        system=system,
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        max_tokens=64,
    )


async def test_the_adapter_streams_text_by_block_and_returns_the_final_reply() -> None:
    sent: list[dict[str, Any]] = []

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(http_request.content))
        body = message_stream(["Hel", "lo"], [" there"])
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    chunks: list[tuple[int, str]] = []

    async def on_text(index: int, chunk: str) -> None:
        chunks.append((index, chunk))

    reply = await adapter(handler).stream(request(system="be brief"), on_text)

    assert chunks == [(0, "Hel"), (0, "lo"), (1, " there")]
    assert reply.texts == ("Hello", " there")
    assert reply.usage == ModelUsage(
        input_tokens=21, output_tokens=9, cache_creation_input_tokens=0, cache_read_input_tokens=3
    )
    assert reply.stop_reason == "end_turn"
    assert sent[0]["model"] == "claude-test"
    assert sent[0]["system"] == "be brief"
    assert sent[0]["max_tokens"] == 64
    assert sent[0]["stream"] is True
    assert sent[0]["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


async def test_the_adapter_omits_an_empty_system_prompt() -> None:
    sent: list[dict[str, Any]] = []

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(http_request.content))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=message_stream(["ok"]))

    async def on_text(index: int, chunk: str) -> None:
        pass

    await adapter(handler).stream(request(system=None), on_text)

    assert "system" not in sent[0]


async def test_the_adapter_raises_a_model_error_for_an_http_error_and_asks_only_once() -> None:
    calls = 0

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return httpx2.Response(529, json=body)

    async def on_text(index: int, chunk: str) -> None:
        pass

    with pytest.raises(ModelError) as raised:
        await adapter(handler).stream(request(), on_text)

    assert raised.value.error_type == "model_overloaded_error"
    assert raised.value.retryable
    assert calls == 1


async def test_the_adapter_maps_an_error_event_in_the_middle_of_the_stream() -> None:
    def handler(http_request: httpx2.Request) -> httpx2.Response:
        body = message_stream(["partial"]).split(b"event: content_block_stop")[0] + sse(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        )
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    chunks: list[str] = []

    async def on_text(index: int, chunk: str) -> None:
        chunks.append(chunk)

    with pytest.raises(ModelError) as raised:
        await adapter(handler).stream(request(), on_text)

    assert chunks == ["partial"]
    assert raised.value.error_type == "model_overloaded_error"


async def test_the_adapter_maps_a_refused_connection() -> None:
    def handler(http_request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=http_request)

    async def on_text(index: int, chunk: str) -> None:
        pass

    with pytest.raises(ModelError) as raised:
        await adapter(handler).stream(request(), on_text)

    assert raised.value.message == "Could not connect to the model API."
    assert raised.value.retryable


def tool_stream() -> bytes:
    """A reply with a text block, then two tool_use blocks whose input streams as JSON fragments."""
    frames: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-test", "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 30, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Running it."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"comm'}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": 'and": "ls"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {}}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"q": 1}'}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 12}},
        {"type": "message_stop"},
    ]  # fmt: skip
    return sse(*frames)


async def test_the_adapter_sends_the_tools_and_returns_the_replys_tool_calls_in_order() -> None:
    sent: list[dict[str, Any]] = []

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(http_request.content))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=tool_stream())

    chunks: list[tuple[int, str]] = []

    async def on_text(index: int, chunk: str) -> None:
        chunks.append((index, chunk))

    tools = ({"name": "bash", "description": "run", "input_schema": {"type": "object", "properties": {}}},)
    base = request()
    reply = await adapter(handler).stream(
        ModelRequest(model=base.model, messages=base.messages, max_tokens=base.max_tokens, tools=tools), on_text
    )

    assert sent[0]["tools"] == list(tools)
    assert chunks == [(0, "Running it.")]
    assert reply.texts == ("Running it.",)
    assert reply.tool_uses == (ToolRequest("bash", {"command": "ls"}), ToolRequest("lookup", {"q": 1}))
    assert reply.stop_reason == "tool_use"


async def test_the_adapter_sends_no_tools_field_when_the_agent_has_none() -> None:
    sent: list[dict[str, Any]] = []

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(http_request.content))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=message_stream(["ok"]))

    async def on_text(index: int, chunk: str) -> None:
        pass

    reply = await adapter(handler).stream(request(), on_text)

    assert "tools" not in sent[0]
    assert reply.tool_uses == ()


async def test_lone_surrogates_in_a_reply_become_replacement_characters() -> None:
    """Valid JSON, not UTF-8: a reply holding one could be neither appended to the log nor streamed."""

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        body = message_stream(["a\ud800", "b\x00"], ["\udfffc"])
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    chunks: list[str] = []

    async def on_text(index: int, chunk: str) -> None:
        chunks.append(chunk)

    reply = await adapter(handler).stream(request(), on_text)

    assert chunks == ["a\ufffd", "b\x00", "\ufffdc"]
    assert reply.texts == ("a\ufffdb\x00", "\ufffdc")
    for text in (*chunks, *reply.texts):
        text.encode()  # well-formed: no lone surrogate left


async def test_health_sees_the_model_endpoint_fail_and_recover() -> None:
    """The harness's health depends on the model: a refused connection makes it ``degraded``, the next
    answered request makes it ``ok`` again."""
    up = True

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        if not up:
            raise httpx2.ConnectError("connection refused", request=http_request)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=message_stream(["ok"]))

    async def on_text(index: int, chunk: str) -> None:
        pass

    model = adapter(handler)
    assert report(worker_id="w", sessions=0, bus_connected=True, model=model.state).status == "ok"
    up = False
    with pytest.raises(ModelError):
        await model.stream(request(), on_text)
    failing = report(worker_id="w", sessions=1, bus_connected=True, model=model.state)
    assert failing.status == "degraded"
    assert failing.dependencies["model"].startswith("failing") and "model_request_failed_error" in model.state
    up = True
    await model.stream(request(), on_text)
    assert report(worker_id="w", sessions=0, bus_connected=True, model=model.state).dependencies["model"] == "ok"
    assert report(worker_id="w", sessions=0, bus_connected=False, model="ok").status == "degraded"
