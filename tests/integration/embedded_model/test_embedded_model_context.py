"""The embedded model as a stand-in for the context window: count_tokens, a size limit answered with
the real API's "prompt is too long" error, and quoted replies to compaction summary requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anthropic
import httpx
import pytest
import pytest_asyncio
from anthropic.types import TextBlock

if TYPE_CHECKING:
    from tests.integration.embedded_model.conftest import EmbeddedModelServer

MODEL = "corral-test-model"


@pytest_asyncio.fixture
async def limited(embedded_model: EmbeddedModelServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=embedded_model.base_url) as http:
        answer = await http.put("/_corral/limits", json={"max_input_tokens": 100})
        assert answer.json() == {"max_input_tokens": 100}
        try:
            yield http
        finally:
            await http.put("/_corral/limits", json={"max_input_tokens": None})


async def test_count_tokens_answers_the_estimate_the_usage_reports(
    client: anthropic.AsyncAnthropic,
) -> None:
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": "count " * 100}]
    counted = await client.messages.count_tokens(model=MODEL, messages=messages, system="be brief")
    created = await client.messages.create(model=MODEL, max_tokens=10, messages=messages, system="be brief")

    assert counted.input_tokens == created.usage.input_tokens == (600 + len("be brief")) // 4


async def test_a_request_over_the_limit_gets_the_real_apis_prompt_too_long_error(
    client: anthropic.AsyncAnthropic, limited: httpx.AsyncClient
) -> None:
    ok = await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "a" * 400}])
    assert ok.usage.input_tokens == 100

    with pytest.raises(anthropic.BadRequestError) as raised:
        await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "a" * 404}])

    assert raised.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 101 tokens > 100 maximum"},
    }
    counted = await client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "a" * 404}])
    assert counted.input_tokens == 101, "count_tokens still answers, consistently with the limit"


async def test_the_limit_control_rejects_nonsense(limited: httpx.AsyncClient) -> None:
    answer = await limited.put("/_corral/limits", json={"max_input_tokens": 0})

    assert answer.status_code == 400
    assert "max_input_tokens" in answer.json()["error"]["message"]
    assert (await limited.get("/_corral/limits")).json() == {"max_input_tokens": 100}


async def test_a_summary_request_gets_a_quoted_summary(client: anthropic.AsyncAnthropic) -> None:
    conversation = "user: start of the story. " + "middle " * 200 + "end of the story."
    message = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        system="Summarise the conversation below so that an agent can carry on the work.",
        messages=[{"role": "user", "content": conversation}],
    )

    text = "".join(block.text for block in message.content if isinstance(block, TextBlock))
    assert text.startswith('Summary (quoted by the embedded model): "user: start of the story.')
    assert text.endswith('end of the story."') and "[...]" in text
    assert len(text) < 700
