"""The Messages API as the real ``anthropic`` SDK sees it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, MessageParam, TextBlock, ToolUseBlock

if TYPE_CHECKING:
    from tests.integration.embedded_model.conftest import EmbeddedModelServer

MODEL = "corral-test-model"
GREETING = "Hello from Corral's embedded model."


def text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if isinstance(block, TextBlock))


def tool_uses(message: Message) -> list[ToolUseBlock]:
    return [block for block in message.content if isinstance(block, ToolUseBlock)]


def scenario(name: str, match: str, *turns: dict[str, Any]) -> dict[str, Any]:
    return {"scenarios": [{"name": name, "match": match, "turns": list(turns)}]}


async def install(server: EmbeddedModelServer, document: dict[str, Any]) -> None:
    response = await server.install(document)
    assert response.status_code == 200, response.text


WRITE_INPUT = {
    "file_path": "/workspace/a.py",
    "content": 'print("héllo, \\"world\\"")\n',
}
WRITE_AND_RUN = scenario(
    "write-and-run",
    r"write and run a\.py",
    {
        "content": [
            {"type": "text", "text": "I'll write the file."},
            {"type": "tool_use", "name": "write", "input": WRITE_INPUT},
        ]
    },
    {"content": [{"type": "tool_use", "name": "bash", "input": {"command": "python a.py"}}]},
    {"content": [{"type": "text", "text": "It printed hello."}]},
)


async def test_default_reply_quotes_the_last_user_text(
    client: anthropic.AsyncAnthropic,
) -> None:
    message = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[
            {"role": "user", "content": "first thing"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "tell me a joke"},
        ],
    )

    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert message.role == "assistant"
    assert text_of(message) == f'{GREETING} You said: "tell me a joke"'
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0


async def test_streamed_text_deltas_concatenate_to_the_final_text(
    client: anthropic.AsyncAnthropic,
) -> None:
    deltas: list[str] = []
    async with client.messages.stream(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "stream please"}],
    ) as stream:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                deltas.append(event.delta.text)
        final = await stream.get_final_message()

    expected = f'{GREETING} You said: "stream please"'
    assert len(deltas) > 3
    assert "".join(deltas) == expected
    assert text_of(final) == expected
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(expected.split())


async def test_usage_defaults_count_characters_in_and_words_out(
    client: anthropic.AsyncAnthropic,
) -> None:
    system = "s" * 40
    user = "u" * 80
    message = await client.messages.create(
        model=MODEL,
        max_tokens=10,
        system=system,
        messages=[{"role": "user", "content": user}],
    )

    assert message.usage.input_tokens == (40 + 80) // 4
    assert message.usage.output_tokens == len(text_of(message).split())


async def test_stream_is_a_well_formed_messages_event_sequence(
    embedded_model: EmbeddedModelServer,
) -> None:
    await install(
        embedded_model,
        scenario(
            "sse-shape",
            "sse shape check",
            {
                "content": [
                    {"type": "text", "text": "two words"},
                    {
                        "type": "tool_use",
                        "name": "bash",
                        "input": {"command": "ls -la /workspace"},
                    },
                ]
            },
        ),
    )
    body = {
        "model": MODEL,
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "sse shape check"}],
    }
    async with httpx.AsyncClient(base_url=embedded_model.base_url) as http:
        response = await http.post("/v1/messages", json=body)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    events: list[str] = []
    for frame in filter(None, response.text.split("\n\n")):
        event_line, data_line = frame.split("\n")
        event = event_line.removeprefix("event: ")
        assert data_line.startswith("data: ")
        assert f'"type":"{event}"' in data_line
        events.append(event)
    runs = [e for i, e in enumerate(events) if i == 0 or e != events[i - 1]]
    assert runs == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events.count("content_block_delta") >= 2 + 3


async def test_scripted_tool_use_parses_with_name_input_and_tool_use_stop_reason(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    await install(embedded_model, WRITE_AND_RUN)
    messages: list[MessageParam] = [{"role": "user", "content": "Please write and run a.py"}]

    created = await client.messages.create(model=MODEL, max_tokens=100, messages=messages)
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=messages) as stream:
        streamed = await stream.get_final_message()

    for message in (created, streamed):
        assert message.stop_reason == "tool_use"
        assert text_of(message) == "I'll write the file."
        (tool_use,) = tool_uses(message)
        assert tool_use.name == "write"
        assert tool_use.input == WRITE_INPUT
        assert tool_use.id.startswith("toolu_")
        assert message.usage.output_tokens == 4 + 10
    assert tool_uses(created)[0].id != tool_uses(streamed)[0].id


async def test_turn_index_follows_the_number_of_assistant_messages(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    await install(embedded_model, WRITE_AND_RUN)
    messages: list[MessageParam] = [{"role": "user", "content": "Please write and run a.py"}]
    texts: list[str] = []
    commands: list[object] = []

    for _ in range(3):
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=messages) as s:
            reply = await s.get_final_message()
        texts.append(text_of(reply))
        commands.extend(block.input for block in tool_uses(reply))
        messages.append({"role": "assistant", "content": reply.content})
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": block.id, "content": "ok"} for block in tool_uses(reply)
                ]
                or "thanks",
            }
        )

    assert texts == ["I'll write the file.", "", "It printed hello."]
    assert commands == [WRITE_INPUT, {"command": "python a.py"}]
    assert reply.stop_reason == "end_turn"


async def test_exhausted_script_says_so_and_ends_the_turn(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    await install(
        embedded_model,
        scenario("one-shot", "one shot only", {"content": [{"type": "text", "text": "once"}]}),
    )

    message = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[
            {"role": "user", "content": "one shot only"},
            {"role": "assistant", "content": "once"},
            {"role": "user", "content": "again?"},
        ],
    )

    assert text_of(message) == "(script for one-shot is exhausted)"
    assert message.stop_reason == "end_turn"


async def test_scripted_error_is_raised_fail_times_then_the_turn_answers(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    await install(
        embedded_model,
        scenario(
            "flaky",
            "flaky upstream",
            {
                "content": [{"type": "text", "text": "finally"}],
                "error": {
                    "status": 529,
                    "type": "overloaded_error",
                    "message": "Overloaded",
                },
                "fail_times": 2,
            },
        ),
    )
    messages: list[MessageParam] = [{"role": "user", "content": "flaky upstream"}]

    with pytest.raises(anthropic.OverloadedError) as first:
        await client.messages.create(model=MODEL, max_tokens=10, messages=messages)
    with pytest.raises(anthropic.InternalServerError) as second:
        async with client.messages.stream(model=MODEL, max_tokens=10, messages=messages) as s:
            await s.get_final_message()
    message = await client.messages.create(model=MODEL, max_tokens=10, messages=messages)

    for raised in (first.value, second.value):
        assert isinstance(raised, anthropic.OverloadedError)
        assert raised.status_code == 529
        assert raised.type == "overloaded_error"
        assert raised.api_message == "Overloaded"
        assert raised.request_id is not None and raised.request_id.startswith("req_")
    assert text_of(message) == "finally"


async def test_scripted_error_without_fail_times_fails_every_time(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    await install(
        embedded_model,
        scenario("rate-limited", "always limited", {"error": {"status": 429}}),
    )

    for _ in range(2):
        with pytest.raises(anthropic.RateLimitError) as raised:
            await client.messages.create(
                model=MODEL,
                max_tokens=10,
                messages=[{"role": "user", "content": "always limited"}],
            )
        assert raised.value.type == "rate_limit_error"


async def test_missing_max_tokens_raises_bad_request_error(
    client: anthropic.AsyncAnthropic,
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}

    with pytest.raises(anthropic.BadRequestError) as raised:
        await client.post("/v1/messages", body=body, cast_to=Message)

    assert raised.value.type == "invalid_request_error"
    assert raised.value.api_message is not None and "max_tokens" in raised.value.api_message


async def test_block_content_with_tool_results_and_images_is_understood(
    client: anthropic.AsyncAnthropic,
) -> None:
    image = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    message = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        system=[{"type": "text", "text": "be brief"}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": image},  # type: ignore[list-item,misc]
                    {"type": "text", "text": "look at this"},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [
                            {"type": "text", "text": "file contents"},
                            {"type": "image", "source": image},  # type: ignore[list-item,misc]
                        ],
                    },
                ],
            },
        ],
    )

    assert text_of(message) == f'{GREETING} You said: "file contents"'


async def test_first_byte_delay_holds_back_the_response(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    await install(
        embedded_model,
        scenario("slow-start", "slow to start", {"first_byte_delay_ms": 5000}),
    )

    with pytest.raises(anthropic.APITimeoutError):
        await client.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[{"role": "user", "content": "slow to start"}],
            timeout=0.3,
        )


async def test_chunk_delay_spaces_out_streamed_deltas(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    await install(
        embedded_model,
        scenario(
            "trickle",
            "trickle it",
            {
                "content": [{"type": "text", "text": "one two three"}],
                "chunk_delay_ms": 60,
            },
        ),
    )
    arrivals: list[float] = []

    async with client.messages.stream(
        model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "trickle it"}]
    ) as stream:
        async for event in stream:
            if event.type == "content_block_delta":
                arrivals.append(time.monotonic())

    assert len(arrivals) == 3
    assert arrivals[-1] - arrivals[0] >= 0.1


async def test_scenario_from_the_startup_file_answers(
    client: anthropic.AsyncAnthropic,
) -> None:
    message = await client.messages.create(
        model=MODEL,
        max_tokens=10,
        messages=[{"role": "user", "content": "file scenario please"}],
    )

    assert text_of(message) == "Scripted from the startup file."


async def test_caller_hanging_up_mid_stream_leaves_the_server_serving(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    words = " ".join(f"word{i}" for i in range(20))
    await install(
        embedded_model,
        scenario("hang-up", "hang up early", {"content": [{"type": "text", "text": words}], "chunk_delay_ms": 50}),
    )
    body = {"model": MODEL, "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hang up early"}]}

    async with (
        httpx.AsyncClient(base_url=embedded_model.base_url) as http,
        http.stream("POST", "/v1/messages", json=body) as response,
    ):
        async for line in response.aiter_lines():
            if line == "event: content_block_delta":
                break

    message = await client.messages.create(
        model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "still there?"}]
    )
    assert text_of(message) == f'{GREETING} You said: "still there?"'
    assert "Traceback" not in embedded_model.log()


async def test_retry_after_ms_lets_the_sdk_retry_a_scripted_error_quickly(
    embedded_model: EmbeddedModelServer,
) -> None:
    await install(
        embedded_model,
        scenario(
            "retry-quickly",
            "retry me quickly",
            {
                "content": [{"type": "text", "text": "recovered"}],
                "error": {"status": 529, "retry_after_ms": 20},
                "fail_times": 1,
            },
        ),
    )

    async with anthropic.AsyncAnthropic(base_url=embedded_model.base_url, api_key="test", max_retries=1) as retrying:
        started = time.monotonic()
        message = await retrying.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "retry me quickly"}]
        )

    assert text_of(message) == "recovered"
    assert time.monotonic() - started < 0.4
    assert [r["errored"] for r in await embedded_model.recorded("retry-quickly")] == [True, False]
