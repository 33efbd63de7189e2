"""Every service's Prometheus endpoint on the real stack: a turn with a tool call shows in the
harness's turn, token and tool counters, the gateway's request counter, the session-store's append
histogram and the sandbox-manager's pool gauge; and each service serves exactly the metrics the README's
"Metrics" table says it does (so the table cannot go stale).
"""

from __future__ import annotations

from collections.abc import Mapping

import anthropic
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral.devstack.services import kind_of
from corral.devstack.stack import Stack
from tests.e2e.flows import open_stream, read_until_idle, script, send_text, unique
from tests.metrics_table import documented_for, exposed
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

#: A sample: (metric family sample name, its labels as sorted pairs) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> tuple[str, Samples]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(url)
    assert answer.status_code == 200, f"{url}: {answer.status_code}"
    assert answer.headers["content-type"].startswith("text/plain"), answer.headers
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return answer.text, samples


async def scrape_all(stack: Stack) -> dict[str, Samples]:
    return {name: (await scrape(url))[1] for name, url in stack.metrics_urls().items()}


def total(samples: Mapping[str, Samples], of: str, name: str, /, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``, over every process of kind ``of``."""
    return sum(
        value
        for service, values in samples.items()
        if kind_of(service) == of
        for (sample, pairs), value in values.items()
        if sample == name and set(labels.items()) <= set(pairs)
    )


def use(name: str, **tool_input: object) -> list[dict[str, object]]:
    return [{"type": "tool_use", "name": name, "input": tool_input}]


async def test_a_turn_with_a_tool_call_shows_in_every_services_metrics(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient
) -> None:
    before = await scrape_all(stack)
    name = unique("metrics")
    await script(model, name, use("bash", command="echo counted"), [{"type": "text", "text": "Done."}])
    agent = await client.beta.agents.create(
        name="e2e metrics", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    env = await client.beta.environments.create(name=unique("e2e-metrics"))
    session_id = (await client.beta.sessions.create(agent=agent.id, environment_id=env.id)).id
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, f"{name}: run a command")
        streamed = await read_until_idle(stream, timeout=120)
    assert streamed[-1].stop_reason.type == "end_turn"
    assert [e.type for e in streamed].count("agent.tool_result") == 1

    def grew(now: Mapping[str, Samples], of: str, metric: str, /, **labels: str) -> bool:
        return total(now, of, metric, **labels) > total(before, of, metric, **labels)

    events_route = {"route": "/v1/sessions/{session_id}/events", "method": "POST", "status": "200"}
    expectations = {
        "a turn ended": ("harness", "corral_harness_turns_total", {"stop_reason": "end_turn"}),
        "model requests": ("harness", "corral_harness_model_requests_total", {"outcome": "ok"}),
        "output tokens": ("harness", "corral_harness_model_tokens_total", {"kind": "output"}),
        "a tool call": ("harness", "corral_harness_tool_calls_total", {"kind": "builtin", "outcome": "ok"}),
        "the overhead": ("harness", "corral_harness_turn_overhead_seconds_count", {}),
        "POST events": ("gateway", "corral_gateway_requests_total", events_route),
        "appends timed": (
            "session-store",
            "corral_session_store_append_duration_seconds_count",
            {"stream": "sessions"},
        ),
        "appends answered": ("session-store", "corral_rpc_requests_total", {"operation": "events.append"}),
        "execs": ("sandbox-manager", "corral_sandbox_manager_execs_total", {"outcome": "ok"}),
    }
    after: dict[str, Samples] = {}

    async def reflected() -> bool:
        after.update(await scrape_all(stack))
        return all(grew(after, of, metric, **labels) for of, metric, labels in expectations.values())

    try:
        await eventually(reflected, timeout=20, every=0.5)
    except TimeoutError:
        missing = [what for what, (k, m, labels) in expectations.items() if not grew(after, k, m, **labels)]
        raise AssertionError(f"the turn did not show in: {missing}") from None

    # two model requests (the tool call, then the answer), each with tokens; two appends at least per request
    assert total(after, "harness", "corral_harness_model_requests_total", outcome="ok") >= (
        total(before, "harness", "corral_harness_model_requests_total", outcome="ok") + 2
    )
    assert total(after, "harness", "corral_harness_model_tokens_total", kind="input") > 0
    assert total(after, "session-store", "corral_session_store_append_duration_seconds_bucket", le="+Inf") > 0
    assert total(after, "sandbox-manager", "corral_sandbox_manager_provision_duration_seconds_count") >= 1
    pools = [
        value
        for (sample, _labels), value in after["sandbox-manager"].items()
        if sample == "corral_sandbox_manager_pool_ready"
    ]
    assert pools, "no warm pool gauge"
    assert total(after, "gateway", "corral_gateway_open_streams") >= 0
    # never a session id or an API key in a label
    for service, values in after.items():
        labels = " ".join(value for (_sample, pairs) in values for _key, value in pairs)
        assert session_id not in labels and stack.api_key not in labels, service


async def test_each_service_serves_exactly_the_documented_metrics(stack: Stack) -> None:
    for service, url in stack.metrics_urls().items():
        text, _samples = await scrape(url)
        served = exposed(text_string_to_metric_families(text))
        assert served == documented_for(kind_of(service)), (
            f"{service} serves metrics the README's Metrics table does not list for it, or lacks some it lists"
        )
        assert "process_cpu_seconds_total" in text, service
