"""One user message, one trace: read back from the trace collector's file (``CORRAL_TRACING=1``).

A turn whose model calls ``bash`` (the sandbox), ``web_fetch`` (the credential-proxy, to a real web
site on this machine) and a tool of a real MCP server that needs a bearer from the session's vault.
Every span of the trace is in the collector's OTLP JSON lines: one root (the gateway's request), the
session-store's append under it, the harness's wake-up under that (across the work queue), the
GenAI model spans and tool spans under the wake-up, and the sandbox-manager's and
credential-proxy's spans under the tool calls. The ``span.*`` events carry the trace id. No secret
(API keys, the MCP bearer, OpenBao's token, NATS passwords) is in any span.

Then the collector is killed while a turn runs: the turn completes as before, each service says
once that export fails (no error per batch), and says so again once the collector is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from corral.devstack.stack import Stack
from tests.e2e.flows import all_events, open_stream, read_until_idle, run_turn, script, send_text, unique
from tests.e2e.sweep import Canaries
from tests.mcp_server import RunningMcpServer
from tests.waiting import eventually
from tests.web_site import Site

pytestmark = pytest.mark.e2e

ALLOW = {"permission_policy": {"type": "always_allow"}}
#: The services a turn with these tools passes through, each its own process.
SERVICES = {"gateway", "session-store", "harness", "sandbox-manager", "credential-proxy"}
EXPORT_FAILED = "trace export failed"
EXPORT_BACK = "trace export works again"


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    service: str
    attributes: dict[str, Any]


def _value(value: dict[str, Any]) -> Any:
    if "arrayValue" in value:
        return [_value(v) for v in value["arrayValue"].get("values", [])]
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    return None


def _attributes(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items}


def read_spans(stack: Stack) -> list[Span]:
    """Every span the collector wrote (OTLP JSON, one export request per line)."""
    path = stack.collector.spans_file
    if not path.exists():
        return []
    spans: list[Span] = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        for resource in json.loads(line).get("resourceSpans", []):
            service = _attributes(resource.get("resource", {}).get("attributes", [])).get("service.name", "")
            for scope in resource.get("scopeSpans", []):
                for span in scope.get("spans", []):
                    spans.append(
                        Span(
                            trace_id=span["traceId"],
                            span_id=span["spanId"],
                            parent_id=span.get("parentSpanId", ""),
                            name=span["name"],
                            kind=span.get("kind", ""),
                            service=service,
                            attributes=_attributes(span.get("attributes", [])),
                        )
                    )
    return spans


class Trace:
    def __init__(self, spans: list[Span]) -> None:
        self.spans = spans
        self.by_id = {span.span_id: span for span in spans}

    def roots(self) -> list[Span]:
        return [span for span in self.spans if not span.parent_id]

    def orphans(self) -> list[Span]:
        return [span for span in self.spans if span.parent_id and span.parent_id not in self.by_id]

    def ancestors(self, span: Span) -> list[Span]:
        chain: list[Span] = []
        while span.parent_id in self.by_id:
            span = self.by_id[span.parent_id]
            chain.append(span)
        return chain

    def named(self, service: str, prefix: str) -> list[Span]:
        return [span for span in self.spans if span.service == service and span.name.startswith(prefix)]

    def one(self, service: str, prefix: str) -> Span:
        found = self.named(service, prefix)
        assert found, f"no {service} span named {prefix}...: {sorted((s.service, s.name) for s in self.spans)}"
        return found[0]

    def under(self, span: Span, service: str, prefix: str) -> Span:
        """The nearest ancestor of ``span`` in ``service`` whose name starts with ``prefix``."""
        for ancestor in self.ancestors(span):
            if ancestor.service == service and ancestor.name.startswith(prefix):
                return ancestor
        chain = [(a.service, a.name) for a in self.ancestors(span)]
        raise AssertionError(f"{span.service} {span.name!r} is not under {service} {prefix}...: its chain is {chain}")


def complete(trace: Trace) -> bool:
    """All the spans a turn with the three tool calls makes have arrived (the exporters batch)."""
    wanted = [
        ("harness", "process corral.wake"),
        ("harness", "chat "),
        ("sandbox-manager", "exec bash"),
        ("credential-proxy", "GET"),
        ("credential-proxy", "tools/call add"),
        ("session-store", "process"),
    ]
    return (
        all(trace.named(service, prefix) for service, prefix in wanted)
        and len(trace.named("harness", "chat ")) >= 2
        and len(trace.roots()) == 1
        and not trace.orphans()
    )


def the_trace(stack: Stack, trace_id: str) -> Trace:
    return Trace([span for span in read_spans(stack) if span.trace_id == trace_id])


async def wait_for_trace(stack: Stack, trace_id: str, *, timeout: float = 30.0) -> Trace:
    """The trace once complete; at the deadline, as it is (the assertions then say what is missing)."""

    async def whole() -> bool:
        return complete(the_trace(stack, trace_id))

    with contextlib.suppress(TimeoutError):
        await eventually(whole, timeout=timeout, every=0.5)
    return the_trace(stack, trace_id)


async def said(path: Path, text: str, *, more_than: int, timeout: float = 15.0) -> None:
    """Wait until ``path`` holds ``text`` more than ``more_than`` times."""

    async def logged() -> bool:
        return path.read_text(errors="replace").count(text) > more_than  # noqa: ASYNC240 - a small log file

    try:
        await eventually(logged, timeout=timeout, every=0.2)
    except TimeoutError:
        raise AssertionError(f"{path.name} did not log {text!r} within {timeout:g} s") from None


def trace_ids(events: list[Any]) -> set[str | None]:
    """The ``corral_trace_id`` of each ``span.*`` event (an extra field the SDK keeps)."""
    return {(e.model_extra or {}).get("corral_trace_id") for e in events if e.type.startswith("span.")}


async def traced_session(
    client: anthropic.AsyncAnthropic,
    model: httpx.AsyncClient,
    web_site: Site,
    mcp_server: RunningMcpServer,
    bearer: str,
) -> tuple[str, str]:
    """A session whose model calls bash, web_fetch and the MCP server's ``add`` in one reply, then ends;
    returns the session id and the scenario name its messages must start with."""
    name = unique("traced")
    uses = [
        {"type": "tool_use", "name": "bash", "input": {"command": "echo traced-run"}},
        {"type": "tool_use", "name": "web_fetch", "input": {"url": web_site.url("/page.html")}},
        {"type": "tool_use", "name": "mcp__secure__add", "input": {"a": 1, "b": 2}},
    ]
    await script(model, name, uses, [{"type": "text", "text": "Done."}], [{"type": "text", "text": "Still here."}])
    vault = await client.beta.vaults.create(display_name=unique("traced"))
    await client.beta.vaults.credentials.create(
        vault.id, auth={"type": "static_bearer", "mcp_server_url": mcp_server.secure_url, "token": bearer}
    )
    configs = [{"name": tool, "enabled": True} for tool in ("bash", "web_fetch")]
    agent = await client.beta.agents.create(
        name=unique("traced"),
        model="claude-sonnet-4-6",
        mcp_servers=[{"type": "url", "name": "secure", "url": mcp_server.secure_url}],
        tools=[
            {"type": "agent_toolset_20260401", "default_config": {"enabled": False}, "configs": configs},  # type: ignore[list-item]
            {"type": "mcp_toolset", "mcp_server_name": "secure", "default_config": ALLOW},  # type: ignore[list-item]
        ],
    )
    env = await client.beta.environments.create(name=unique("traced-env"))
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id, vault_ids=[vault.id])
    return session.id, name


def assert_tools_answered(seen: list[Any]) -> None:
    results = [e for e in seen if e.type in ("agent.tool_result", "agent.mcp_tool_result")]
    assert len(results) == 3 and not any(r.is_error for r in results), [(e.type, e) for e in results]


async def test_one_user_message_is_one_trace_across_the_services(
    stack: Stack,
    client: anthropic.AsyncAnthropic,
    model: httpx.AsyncClient,
    web_site: Site,
    mcp_server: RunningMcpServer,
) -> None:
    assert stack.tracing and stack.collector.is_running()
    bearer = Canaries().new("traced-bearer")
    mcp_server.valid_tokens.add(bearer)
    session_id, name = await traced_session(client, model, web_site, mcp_server, bearer)

    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: use every tool")
        seen = await read_until_idle(stream, timeout=120)
    assert_tools_answered(seen)

    # the span events carry the turn's trace id: one, the same on every one of them
    [trace_id] = trace_ids(await all_events(client, session_id))
    assert trace_id is not None and len(trace_id) == 32

    trace = await wait_for_trace(stack, trace_id)
    assert complete(trace), sorted((s.service, s.name, s.parent_id) for s in trace.spans)
    assert {span.service for span in trace.spans} >= SERVICES

    # the root: the gateway's request that carried the user message
    [root] = trace.roots()
    assert root.service == "gateway" and root.kind == "SPAN_KIND_SERVER"
    assert root.attributes.get("http.route") == "/v1/sessions/{session_id}/events"
    assert root.attributes.get("http.request.method") == "POST"

    # the append in the session-store, under the request; the wake-up in the harness, under the append
    wake = trace.one("harness", "process corral.wake")
    assert wake.kind == "SPAN_KIND_CONSUMER" and wake.attributes["messaging.system"] == "nats"
    # its parent: the session-store's producer span of the wake-up's publish (messaging conventions)
    [send] = [s for s in trace.spans if s.span_id == wake.parent_id]
    assert (send.service, send.name, send.kind) == ("session-store", "send corral.wake", "SPAN_KIND_PRODUCER")
    assert send.attributes["messaging.system"] == "nats"
    assert send.attributes["messaging.destination.name"] == f"corral.wake.{session_id}"
    append = trace.under(send, "session-store", "process")
    assert trace.under(append, "gateway", "POST") is root

    # each model request: a GenAI client span under the wake-up, with model, usage and stop reason
    chats = trace.named("harness", "chat ")
    for chat in chats:
        assert trace.under(chat, "harness", "process corral.wake") is wake
        assert chat.kind == "SPAN_KIND_CLIENT"
        assert chat.attributes["gen_ai.system"] == "anthropic"
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == "claude-sonnet-4-6"
        assert chat.attributes["gen_ai.usage.input_tokens"] > 0
        assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    assert sorted(c.attributes["gen_ai.response.finish_reasons"][0] for c in chats) == ["end_turn", "tool_use"]
    # under each, the client span of its request to the model server
    for chat in chats:
        calls = [s for s in trace.spans if s.parent_id == chat.span_id and s.kind == "SPAN_KIND_CLIENT"]
        assert [c.attributes.get("server.port") for c in calls] == [stack.ports.embedded_model], calls

    # the tool calls, under the wake-up; their work in the other services under them
    bash = trace.under(trace.one("sandbox-manager", "exec bash"), "harness", "execute_tool bash")
    assert bash.attributes["gen_ai.tool.name"] == "bash" and "error.type" not in bash.attributes
    assert trace.under(bash, "harness", "process corral.wake") is wake
    exec_span = trace.one("sandbox-manager", "exec bash")
    assert trace.under(exec_span, "sandbox-manager", "process").kind == "SPAN_KIND_SERVER"
    fetch = trace.one("credential-proxy", "GET")
    assert fetch.kind == "SPAN_KIND_CLIENT" and fetch.attributes["http.response.status_code"] == 200
    assert trace.under(fetch, "harness", "execute_tool web_fetch").attributes["corral.tool.kind"] == "web"
    mcp_call = trace.one("credential-proxy", "tools/call add")
    assert mcp_call.attributes["mcp.method.name"] == "tools/call"
    assert trace.under(mcp_call, "harness", "execute_tool").attributes["corral.tool.kind"] == "mcp"
    # the projections' queries, by the asyncpg instrumentation, somewhere in the stack's traces
    assert any(span.attributes.get("db.system") == "postgresql" for span in read_spans(stack))

    # no secret in any span of any trace
    written = stack.collector.spans_file.read_text()
    secrets = {
        "the API key": stack.api_key,
        "the admin API key": stack.admin_api_key,
        "the MCP bearer": bearer,
        "OpenBao's root token": stack.vault_token,
        **{f"NATS password of {user}": password for user, password in stack.nats.users.passwords().items()},
    }
    assert [what for what, value in secrets.items() if value and value in written] == []


async def test_a_collector_that_dies_mid_turn_changes_nothing_for_the_session(
    stack: Stack,
    client: anthropic.AsyncAnthropic,
    model: httpx.AsyncClient,
    web_site: Site,
    mcp_server: RunningMcpServer,
) -> None:
    bearer = Canaries().new("traced-bearer")
    mcp_server.valid_tokens.add(bearer)
    session_id, name = await traced_session(client, model, web_site, mcp_server, bearer)
    logs = {service: stack.log_path(service) for service in stack.service_names()}
    before = {service: path.read_text(errors="replace").count(EXPORT_FAILED) for service, path in logs.items()}
    try:
        stream = await open_stream(client, session_id)
        async with stream:
            await send_text(client, session_id, f"{name}: use every tool")
            seen: list[Any] = []
            async with asyncio.timeout(60):
                async for event in stream:  # the turn is running: its first tool call is out
                    seen.append(event)
                    if event.type == "agent.tool_use":
                        break
            stack.kill("collector")
            seen += await read_until_idle(stream, timeout=120)
        assert_tools_answered(seen)
        assert seen[-1].stop_reason.type == "end_turn"

        # a second turn, whole, with no collector at all
        finished = await run_turn(client, session_id, "hello again")
        assert [e.content[0].text for e in finished if e.type == "agent.message"] == ["Still here."]

        # the services that exported spans said so once each: no line per failed batch
        await said(logs["gateway"], EXPORT_FAILED, more_than=before["gateway"])
        for service, path in logs.items():
            text = path.read_text(errors="replace")
            assert text.count(EXPORT_FAILED) - before[service] <= 1, service
            assert "Failed to export" not in text and "Transient error" not in text, service
    finally:
        if not stack.collector.is_running():
            stack.collector.launch()
            stack.collector.wait_ready(time.monotonic() + 30)
    # and once it is back, they export again (the gateway exports every request's span)
    back = logs["gateway"].read_text(errors="replace").count(EXPORT_BACK)
    await client.beta.sessions.retrieve(session_id)
    await said(logs["gateway"], EXPORT_BACK, more_than=back)
