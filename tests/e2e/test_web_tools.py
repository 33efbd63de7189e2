"""The built-in ``web_fetch`` and ``web_search`` tools, end to end: the embedded model calls them, the
harness asks the credential-proxy, which fetches from a real web site on this machine (admitted by
the stack's ``CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES`` as an operator admits a private service) under the
egress destination rules, and searches a real SearXNG-compatible backend (``tests.web_site``).
What the model was sent is read back from the embedded model's recorded requests."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from corral.devstack.stack import Stack
from tests.e2e.flows import all_events, requests_of, run_turn, script, unique
from tests.host_canary import HostCanary
from tests.web_site import Site

pytestmark = pytest.mark.e2e


async def run_calls(
    client: anthropic.AsyncAnthropic,
    model: httpx.AsyncClient,
    calls: list[tuple[str, dict[str, Any]]],
    config: dict[str, Any] | None = None,
) -> tuple[list[Any], str]:
    """A session whose model makes ``calls`` (tool name, input) in one turn, with only the web tools
    enabled (``config``: extra fields for both tools' configs). Returns the ``agent.tool_result``
    events in order and everything the model was sent afterwards, as JSON text."""
    name = unique("web")
    uses = [{"type": "tool_use", "name": tool, "input": given} for tool, given in calls]
    await script(model, name, uses, [{"type": "text", "text": "Done."}])
    configs = [{"name": tool, "enabled": True, **(config or {})} for tool in ("web_fetch", "web_search")]
    agent = await client.beta.agents.create(
        name="e2e web",
        model="claude-sonnet-4-6",
        tools=[{"type": "agent_toolset_20260401", "default_config": {"enabled": False}, "configs": configs}],  # type: ignore[list-item]
    )
    env = await client.beta.environments.create(name=unique("e2e-web"))
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    await run_turn(client, session.id, f"{name}: use the web")
    history = await all_events(client, session.id)
    assert [e.name for e in history if e.type == "agent.tool_use"] == [tool for tool, _ in calls]
    results = [e for e in history if e.type == "agent.tool_result"]
    assert len(results) == len(calls)
    sent = await requests_of(model, name)
    return results, json.dumps(sent[-1]["messages"][-1])


def error_text(result: Any) -> str:
    assert result.is_error, result
    return "\n".join(block.text for block in result.content if block.type == "text")


async def test_a_fetched_page_reaches_the_model_as_text(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, web_site: Site
) -> None:
    [result], sent = await run_calls(client, model, [("web_fetch", {"url": web_site.url("/page.html")})])
    assert not result.is_error
    [document] = result.content
    assert document.type == "document" and document.title == "Canary page"
    assert document.source.type == "text" and web_site.canary in document.source.data
    assert "var hidden" not in document.source.data  # scripts are not text
    assert web_site.url("/page.html") in (document.context or "")
    assert web_site.canary in sent and '"tool_result"' in sent


async def test_the_tool_s_domains_are_honoured(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, web_site: Site
) -> None:
    calls = [("web_fetch", {"url": web_site.url("/page.html")})]
    [blocked], sent = await run_calls(client, model, calls, {"blocked_domains": [web_site.address]})
    assert "url_not_allowed" in error_text(blocked) and "blocked_domains" in error_text(blocked)
    assert web_site.canary not in sent
    [elsewhere], _ = await run_calls(client, model, calls, {"allowed_domains": ["example.com"]})
    assert "allowed_domains" in error_text(elsewhere)
    [allowed], _ = await run_calls(client, model, calls, {"allowed_domains": [web_site.address]})
    assert not allowed.is_error and web_site.canary in allowed.content[0].source.data


async def test_loopback_not_admitted_and_redirects_to_it_are_refused(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, web_site: Site, host_canary: HostCanary
) -> None:
    """The host canary listens on every address of this machine on a port egress allows: only the
    address rules (on the address connected to, and again on a redirect's target) keep it out."""
    loopback = f"http://127.0.0.1:{host_canary.port}/"
    calls = [
        ("web_fetch", {"url": loopback}),
        ("web_fetch", {"url": f"http://localhost:{host_canary.port}/"}),
        ("web_fetch", {"url": web_site.url(f"/redirect?to={loopback}")}),
    ]
    results, sent = await run_calls(client, model, calls)
    for result in results:
        text = error_text(result)
        assert (
            "url_not_allowed" in text
            and "loopback" in text
            and "CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES" in text
        )
    assert host_canary.canary not in sent
    assert any(path.startswith("/redirect") for path in web_site.requests)


async def test_max_content_tokens_truncates_with_a_note(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, web_site: Site
) -> None:
    calls = [("web_fetch", {"url": web_site.url("/long.html")})]
    [result], _ = await run_calls(client, model, calls, {"max_content_tokens": 100})
    [document] = result.content
    assert document.source.data.startswith("Paragraph 0") and len(document.source.data) <= 400
    assert "truncated to max_content_tokens (100 tokens)" in (document.context or "")
    [whole], _ = await run_calls(client, model, calls)
    assert "Paragraph 1499" in whole.content[0].source.data


async def test_web_search_asks_the_operator_s_backend(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, web_site: Site
) -> None:
    calls = [("web_search", {"query": "otters"})]
    [result], sent = await run_calls(client, model, calls, {"blocked_domains": ["example.net"]})
    assert not result.is_error
    assert [(b.type, b.source, b.title) for b in result.content] == [
        ("search_result", "https://docs.example.com/otters", "Otters in the docs"),
        ("search_result", "https://example.org/otters", "Otter news"),
    ]
    assert result.content[0].content[0].text == "All about otters."
    assert "https://docs.example.com/otters" in sent and "ads.example.net" not in sent
    assert any("q=otters" in path for path in web_site.requests)


async def test_web_search_without_a_backend_says_it_is_not_configured(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, stack: Stack
) -> None:
    before = dict(stack.service_env["credential-proxy"])
    stack.service_env["credential-proxy"] = {
        k: v for k, v in before.items() if k != "CORRAL_CREDENTIAL_PROXY_SEARCH_URL"
    }
    try:
        stack.restart_service("credential-proxy")
        [result], sent = await run_calls(client, model, [("web_search", {"query": "otters"})])
        text = error_text(result)
        assert "not configured" in text and "CORRAL_CREDENTIAL_PROXY_SEARCH_URL" in text
        assert "not configured" in sent
    finally:
        stack.service_env["credential-proxy"] = before
        stack.restart_service("credential-proxy")
