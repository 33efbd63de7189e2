"""The harness side of the web tools: the tool's config goes with the request, answers become the
API's content blocks, failures become error results the model can read."""

from __future__ import annotations

import asyncio
from typing import Any

from corral.contracts.web import FetchedPage, FetchPage, SearchHit, SearchResults, SearchWeb
from corral.harness.decide import ToolCall
from corral.harness.events import wire
from corral.harness.tools import toolbox
from corral.harness.webtools import WebToolError, run_web_tool

AGENT: dict[str, Any] = {
    "tools": [
        {
            "type": "agent_toolset_20260401",
            "default_config": {"enabled": False, "permission_policy": {"type": "always_allow"}},
            "configs": [
                {
                    "name": "web_fetch",
                    "type": "web_fetch",
                    "enabled": True,
                    "max_content_tokens": 50,
                    "blocked_domains": ["ads.example.com"],
                },
                {"name": "web_search", "type": "web_search", "enabled": True, "allowed_domains": ["example.org"]},
            ],
        }
    ]
}


class FakeWeb:
    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.asked: list[Any] = []

    async def fetch(self, request: FetchPage) -> FetchedPage:
        self.asked.append(request)
        if self.fail:
            raise WebToolError(self.fail)
        return FetchedPage(
            url=request.url, status=200, content_type="text/html", title="T", text="hello", notes=["cut"]
        )

    async def search(self, request: SearchWeb) -> SearchResults:
        self.asked.append(request)
        return SearchResults(query=request.query, results=[SearchHit(url="https://example.org/a", title="A")])


async def run(web: FakeWeb, name: str, given: dict[str, Any]) -> dict[str, Any]:
    return wire(await run_web_tool(web, "sesn_1", AGENT, ToolCall(id="evt_1", name=name, input=given), asyncio.Event()))


async def test_a_fetch_carries_the_tool_config_and_becomes_a_document() -> None:
    web = FakeWeb()
    result = await run(web, "web_fetch", {"url": " https://example.com/ "})
    [request] = web.asked
    assert request.url == "https://example.com/" and request.max_content_tokens == 50
    assert request.blocked_domains == ["ads.example.com"] and request.allowed_domains is None
    assert result["is_error"] is False
    [document] = result["content"]
    assert document["source"] == {"type": "text", "media_type": "text/plain", "data": "hello"}
    assert document["title"] == "T" and "https://example.com/" in document["context"] and "cut" in document["context"]


async def test_a_search_becomes_search_result_blocks() -> None:
    web = FakeWeb()
    result = await run(web, "web_search", {"query": "otters"})
    assert web.asked[0].allowed_domains == ["example.org"]
    assert result["content"] == [
        {
            "type": "search_result",
            "source": "https://example.org/a",
            "title": "A",
            "content": [{"type": "text", "text": "A"}],
            "citations": {"enabled": True},
        }
    ]


async def test_failures_and_bad_input_are_error_results() -> None:
    refused = await run(FakeWeb(fail="web_fetch error (url_not_allowed): no"), "web_fetch", {"url": "http://x/"})
    assert refused["is_error"] is True and "url_not_allowed" in refused["content"][0]["text"]
    web = FakeWeb()
    missing = await run(web, "web_fetch", {})
    assert missing["is_error"] is True and "url" in missing["content"][0]["text"] and web.asked == []


def test_web_tools_alone_need_no_sandbox() -> None:
    assert not toolbox(AGENT).needs_sandbox
    assert set(toolbox(AGENT).builtin) == {"web_fetch", "web_search"}
