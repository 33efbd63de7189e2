"""B1: the harness's overhead per tool-call round trip, on a private local stack with Docker.

The embedded model is scripted with ``--calls`` ``tool_use`` turns (``bash true``) and a final text
turn, and records when each Messages request arrived. A round trip is the gap between two consecutive
requests of one session: the model's reply (the same in both runs), then everything until the next
request with the tool result in it. Measured for:

  * Corral: a session of an agent with the built-in toolset (the harness records ``agent.tool_use``
    and ``agent.tool_result`` durably, the sandbox-manager runs the tool in the session's warm
    sandbox); the first round trip of each session (which provisions) is left out;
  * the baseline, in the same run: a bare ``anthropic`` SDK loop (``messages.stream``) against the
    same model and script, running the tool as a local Python function.

The overhead is Corral's p50 minus the baseline's. CPU per round trip is read from /proc per process.

    uv run python bench/tool_loop.py [--sessions 10] [--calls 20] [--json PATH]

Target (reported, not asserted): overhead p50 < 3 ms, p99 < 15 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import tempfile
import time
from pathlib import Path

import anthropic
import httpx
from anthropic.types import MessageParam, ToolParam, ToolResultBlockParam
from report import Figure, finish, ok, pct, say
from stack_cpu import cpu_ms, own_cpu_ms, per_op

from corral.contracts.sandbox import TOOLSET_TYPE
from corral.devstack.ports import Ports
from corral.devstack.stack import Stack

DOCKER_DATA_ROOT = os.environ.get("CORRAL_DOCKER_DATA_ROOT") or "/var/tmp/corral-e2e-docker"
TOOL = {"type": "tool_use", "name": "bash", "input": {"command": "true"}}
BASH_TOOL: ToolParam = {
    "name": "bash",
    "description": "Run a command.",
    "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
}


async def script(model: httpx.AsyncClient, calls: int) -> str:
    name = f"b1-{secrets.token_hex(4)}"
    turns = [{"content": [TOOL]} for _ in range(calls)] + [{"content": [{"type": "text", "text": "done"}]}]
    ok(await model.post("/_corral/scripts", json={"scenarios": [{"name": name, "match": f"^{name}", "turns": turns}]}))
    return name


async def gaps(model: httpx.AsyncClient, scenario: str, skip_first: bool) -> list[float]:
    """Gaps (ms) between consecutive recorded requests of ``scenario``."""
    answer = ok(await model.get("/_corral/requests", params={"scenario": scenario}))
    arrivals = sorted(r["received_at"] for r in answer["requests"] if not r["errored"])
    out = [(b - a) * 1000 for a, b in itertools.pairwise(arrivals)]
    return out[1:] if skip_first else out


def local_tool(command: str) -> str:
    """The baseline's tool: a local Python function."""
    return f"ran {command!r}"


async def bare_sdk_loop(client: anthropic.AsyncAnthropic, scenario: str) -> int:
    """The minimal tool loop: stream a request, run each tool_use locally, send the results back."""
    messages: list[MessageParam] = [{"role": "user", "content": f"{scenario}: go"}]
    rounds = 0
    while True:
        async with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=1024, messages=messages, tools=[BASH_TOOL]
        ) as stream:
            message = await stream.get_final_message()
        if message.stop_reason != "tool_use":
            return rounds
        messages.append({"role": "assistant", "content": message.content})
        results: list[ToolResultBlockParam] = [
            {"type": "tool_result", "tool_use_id": b.id, "content": local_tool(str(b.input))}
            for b in message.content
            if b.type == "tool_use"
        ]
        messages.append({"role": "user", "content": results})
        rounds += 1


async def corral_session(http: httpx.AsyncClient, agent_env: tuple[str, str], scenario: str) -> None:
    """One session through the public API: post the message, read the stream until the turn ends."""
    sid = ok(await http.post("/v1/sessions", json={"agent": agent_env[0], "environment_id": agent_env[1]}))["id"]
    message = {"events": [{"type": "user.message", "content": [{"type": "text", "text": f"{scenario}: go"}]}]}
    async with asyncio.timeout(180), http.stream("GET", f"/v1/sessions/{sid}/events/stream") as stream:
        ok(await http.post(f"/v1/sessions/{sid}/events", json=message))
        async for raw in stream.aiter_lines():
            if raw.startswith("event: session.status_idle") or raw.startswith("event: session.error"):
                break
    await http.post(f"/v1/sessions/{sid}/archive")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--calls", type=int, default=20, help="tool calls per session")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        say("starting a private stack with a Docker engine ...")
        service_env = {
            "gateway": {"CORRAL_GATEWAY_RATE_LIMIT_RPS": "0"},
            "sandbox-manager": {"CORRAL_SANDBOX_SCOPE": f"bench-{secrets.token_hex(4)}"},
            "embedded-model": {"CORRAL_EMBEDDED_MODEL_MAX_RECORDED_REQUESTS": "100000"},
        }
        environ = {"CORRAL_DOCKER_DATA_ROOT": DOCKER_DATA_ROOT}
        stack = Stack(
            Path(tmp), Ports.free(), docker=True, environ=environ, service_env=service_env, log_level="WARNING"
        )
        stack.start(timeout=900)
        try:
            model_url = f"http://127.0.0.1:{stack.ports.embedded_model}"
            async with (
                httpx.AsyncClient(base_url=stack.gateway_url, headers={"x-api-key": stack.api_key}, timeout=60) as http,
                httpx.AsyncClient(base_url=model_url, timeout=60) as model,
                anthropic.AsyncAnthropic(api_key="bench", base_url=model_url, max_retries=0) as sdk,
            ):
                tools = [{"type": TOOLSET_TYPE}]
                agent = ok(
                    await http.post("/v1/agents", json={"name": "b1", "model": "claude-sonnet-4-6", "tools": tools})
                )
                env = ok(await http.post("/v1/environments", json={"name": f"b1-{agent['id'].lower()}"}))["id"]
                say("warming up ...")
                await corral_session(http, (agent["id"], env), await script(model, 2))
                await bare_sdk_loop(sdk, await script(model, 2))
                ours: list[float] = []
                bare: list[float] = []
                cpu: dict[str, float] = {}
                client_cpu = 0.0
                say(
                    f"measuring {args.sessions} sessions x {args.calls} tool calls, Corral and bare SDK interleaved ..."
                )
                for _ in range(args.sessions):
                    scenario = await script(model, args.calls)
                    before, own = cpu_ms(stack), own_cpu_ms()
                    await corral_session(http, (agent["id"], env), scenario)
                    round_trips = await gaps(model, scenario, skip_first=True)
                    ours.extend(round_trips)
                    spent = per_op(before, cpu_ms(stack), len(round_trips) + 1)
                    cpu = {k: cpu.get(k, 0.0) + v / args.sessions for k, v in spent.items()}
                    client_cpu += (own_cpu_ms() - own) / (len(round_trips) + 1) / args.sessions
                    baseline_scenario = await script(model, args.calls)
                    t0 = time.perf_counter()
                    await bare_sdk_loop(sdk, baseline_scenario)
                    if time.perf_counter() - t0 > 60:
                        raise SystemExit("the bare SDK loop took over a minute")
                    bare.extend(await gaps(model, baseline_scenario, skip_first=True))
        finally:
            stack.stop()

    overhead_p50 = pct(ours, 0.5) - pct(bare, 0.5)
    overhead_p99 = pct(ours, 0.99) - pct(bare, 0.99)
    figures = [
        Figure.latency("B1", "baseline: bare SDK tool loop, round trip", bare),
        Figure.latency(
            "B1",
            "tool round trip, Corral (bash true in a warm sandbox)",
            ours,
            baseline_ms=bare,
            baseline_name="bare SDK",
            cpu_ms_per_op={**cpu, "bench-client": client_cpu},
        ),
        Figure(
            "B1",
            "overhead per tool round trip (Corral - bare SDK)",
            overhead_p50,
            "ms",
            p99=overhead_p99,
            n=len(ours),
            target="p50 < 3 ms, p99 < 15 ms",
        ),
    ]
    finish(f"B1 on the local stack with Docker ({os.cpu_count() or 0} cores)", figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
