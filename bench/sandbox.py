"""Benchmark of sandbox readiness, exec latency and TTFT with tools, on a private local stack with Docker.

Starts one private stack (real NATS, Postgres, services, embedded model, a Docker engine and the sandbox
image) and prints, next to plain Docker SDK baselines measured in the same run:
  * B4 sandbox ready: ``provision`` over the bus for fresh sessions, from the warm pool (each request
    waits until the manager's health says every pool is full, so each one finds a spare) for an
    environment without network access and for the API's default one (``unrestricted``: the pooled
    sandbox's egress slot gets the session's policy at the claim), and cold (the sandbox-manager
    restarted with ``CORRAL_SANDBOX_POOL_SIZE=0``), vs ``docker run --rm --network none <image> true``;
  * B4 exec latency: ``execute`` of ``bash echo hi`` over the bus (distinct tool_use_ids) vs
    ``docker exec`` (``bash -c 'echo hi'``) in a plain container of the same image, and a 10 KB
    ``write`` over the bus;
  * B3 TTFT: session create + POST user.message -> first ``event_delta`` (or ``agent.message``) on
    the SSE stream, fresh session each sample, with the embedded model scripted to take
    ``MODEL_TTFT_MS`` before its first byte (as performance.md's B3 says); reported as the overhead
    over that model TTFT in three states: an agent without tools (no sandbox ever), the built-in
    toolset with cold provisioning at turn start, and with the warm pool (default and isolated
    environments).

    uv run python bench/sandbox.py [--samples 20] [--execs 100]

Every sandbox a sample provisions is released again before the next sample.
Targets (reported, not asserted): warm ready p50 < 50 ms, cold p50 < 400 ms, exec p50 < 5 ms,
TTFT - model TTFT <= 20 ms p50 / 50 ms p95 in all three states, i.e.
TTFT(cold sandbox)/TTFT(no sandbox) = 1.00 +- 0.05.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, TypeVar

import docker
import httpx
from pydantic import BaseModel
from report import Figure, finish, ok, pct, say
from stack_cpu import cpu_ms, per_op
from ttft import MODEL_TTFT_MS, Steps, Ttft, direct_ttft, script_model_ttft

from corral.bus import Bus
from corral.contracts.api.errors import ApiError
from corral.contracts.health import Health
from corral.contracts.operation import Operation
from corral.contracts.sandbox import TOOLSET_TYPE, Execute, Provision, Provisioned, Release, SandboxOps
from corral.contracts.subjects import health
from corral.devstack.ports import Ports
from corral.devstack.stack import Stack

#: The engine's data root (its image cache), shared with the e2e tests unless told otherwise.
DOCKER_DATA_ROOT = os.environ.get("CORRAL_DOCKER_DATA_ROOT") or "/var/tmp/corral-e2e-docker"
MANAGER = "sandbox-manager"
#: An environment without network access (no egress: its own warm pool, network ``none``).
ISOLATED: dict[str, Any] = {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": []}}
#: The API's default environment (``networking: unrestricted``): pooled sandboxes with an egress slot.
DEFAULT: dict[str, Any] = {"type": "cloud", "networking": {"type": "unrestricted"}}

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep")


def fresh_session() -> str:
    return f"sesn_{uuid.uuid4().hex}"


class Sandboxes:
    """A client of the sandbox-manager over the bus."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def call(self, op: Operation[Req, Rep], request: Req) -> Rep:
        try:
            return await self.bus.call(op, request, timeout=60.0)
        except ApiError as exc:
            raise SystemExit(f"sandbox {op.name} refused: {exc}") from exc

    async def provision(self, session_id: str, config: dict[str, Any] = ISOLATED) -> tuple[float, Provisioned]:
        request = Provision(session_id=session_id, environment_id="env_bench", environment_config=config)
        t0 = time.perf_counter()
        provisioned = await self.call(SandboxOps.PROVISION, request)
        return (time.perf_counter() - t0) * 1000, provisioned

    async def bash(self, session_id: str, command: str) -> tuple[float, str]:
        return await self.tool(session_id, "bash", {"command": command})

    async def tool(self, session_id: str, name: str, tool_input: dict[str, Any]) -> tuple[float, str]:
        request = Execute(
            session_id=session_id,
            tool_use_id=f"toolu_{uuid.uuid4().hex}",
            name=name,
            input=tool_input,
            environment_id="env_bench",
            environment_config=ISOLATED,
        )
        t0 = time.perf_counter()
        outcome = await self.call(SandboxOps.EXECUTE, request)
        took = (time.perf_counter() - t0) * 1000
        if outcome.is_error:
            raise SystemExit(f"{name} {tool_input!r} failed: {outcome.content}")
        return took, outcome.content[-1].text

    async def release(self, session_id: str) -> None:
        await self.call(SandboxOps.RELEASE, Release(session_id=session_id, reason="bench"))

    async def wait_pools_full(self, timeout: float = 60.0) -> None:
        """Until the manager reports every warm pool full (``<spec>:<n>/<n>``)."""
        async with asyncio.timeout(timeout):
            while True:
                status = Health.model_validate_json(await self.bus.request(health(MANAGER), b"{}"))
                pools = str(status.details.get("pools", "none"))
                fills = [p.rsplit(":", 1)[-1].split("/") for p in pools.split(",")]
                if pools != "none" and all(have == size for have, size in fills):
                    return
                await asyncio.sleep(0.05)


async def warm_provisions(
    sandboxes: Sandboxes, samples: int, config: dict[str, Any]
) -> tuple[list[float], list[float], int]:
    """Each provision waits until the pool is full again, so it always finds a spare."""
    wall: list[float] = []
    server: list[float] = []
    missed = 0
    for _ in range(samples):
        await sandboxes.wait_pools_full()
        sid = fresh_session()
        took, got = await sandboxes.provision(sid, config)
        if got.from_pool:
            wall.append(took)
            server.append(got.ready_ms)
        else:
            missed += 1
        await sandboxes.release(sid)
    return wall, server, missed


async def cold_provisions(
    sandboxes: Sandboxes, client: docker.DockerClient, image: str, samples: int
) -> tuple[list[float], list[float], list[float]]:
    """Pool disabled: each provision starts a container; interleaved with plain ``docker run``."""
    wall: list[float] = []
    server: list[float] = []
    plain: list[float] = []
    for _ in range(samples):
        sid = fresh_session()
        took, got = await sandboxes.provision(sid)
        if got.from_pool:
            raise SystemExit("a provision came from the pool although the pool is disabled")
        wall.append(took)
        server.append(got.ready_ms)
        await sandboxes.release(sid)
        t0 = time.perf_counter()
        await asyncio.to_thread(client.containers.run, image, "true", remove=True, network_mode="none")
        plain.append((time.perf_counter() - t0) * 1000)
    return wall, server, plain


async def exec_latency(
    stack: Stack, sandboxes: Sandboxes, client: docker.DockerClient, image: str, samples: int
) -> tuple[list[float], list[float], list[float], dict[str, float]]:
    sid = fresh_session()
    await sandboxes.provision(sid)
    await sandboxes.bash(sid, "echo warm-up")
    rpc: list[float] = []
    before = cpu_ms(stack)
    for _ in range(samples):
        took, text = await sandboxes.bash(sid, "echo hi")
        if text.strip() != "hi":
            raise SystemExit(f"echo hi answered {text!r}")
        rpc.append(took)
    cpu = per_op(before, cpu_ms(stack), samples)
    write: list[float] = []
    payload = "x" * 10_000
    for _ in range(max(10, samples // 2)):
        took, _text = await sandboxes.tool(sid, "write", {"file_path": "blob.txt", "content": payload})
        write.append(took)
    await sandboxes.release(sid)

    container = await asyncio.to_thread(
        client.containers.run, image, ["sleep", "infinity"], detach=True, network_mode="none", user="1000:1000"
    )
    plain: list[float] = []
    try:
        await asyncio.to_thread(container.exec_run, ["bash", "-c", "echo warm-up"], user="1000:1000")
        for _ in range(max(20, samples // 5)):
            t0 = time.perf_counter()
            result = await asyncio.to_thread(container.exec_run, ["bash", "-c", "echo hi"], user="1000:1000")
            plain.append((time.perf_counter() - t0) * 1000)
            if result.output != b"hi\n":
                raise SystemExit(f"docker exec answered {result.output!r}")
    finally:
        await asyncio.to_thread(container.remove, force=True)
    return rpc, plain, write, cpu


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20, help="provisions and TTFT samples per mode")
    parser.add_argument("--execs", type=int, default=100, help="execute calls")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    n: int = args.samples

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        say("starting a private stack with a Docker engine ...")
        # a unique scope: the engine may be shared with another stack on the same data root
        manager_env = {"CORRAL_SANDBOX_SCOPE": f"bench-{secrets.token_hex(4)}"}
        stack = Stack(
            Path(tmp),
            Ports.free(),
            docker=True,
            environ={"CORRAL_DOCKER_DATA_ROOT": DOCKER_DATA_ROOT},
            service_env={MANAGER: manager_env},
            log_level="WARNING",
        )
        stack.start(timeout=900)
        try:
            image = stack.sandbox_image
            if image is None or stack.docker_host is None:
                raise SystemExit("the stack has no Docker engine or sandbox image")
            say(f"stack up in {time.perf_counter() - began:.1f} s: gateway {stack.gateway_url}, image {image}")
            client = docker.DockerClient(base_url=stack.docker_host)
            headers = {"x-api-key": stack.api_key}
            async with (
                Bus.connect(stack.nats_settings(), name="bench-sandbox") as bus,
                httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=60) as http,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.embedded_model}", timeout=10) as model,
            ):
                sandboxes = Sandboxes(bus)
                plain_agent = ok(await http.post("/v1/agents", json={"name": "bench", "model": "claude-sonnet-4-6"}))
                tools_agent = ok(
                    await http.post(
                        "/v1/agents",
                        json={"name": "bench-tools", "model": "claude-sonnet-4-6", "tools": [{"type": TOOLSET_TYPE}]},
                    )
                )
                suffix = plain_agent["id"].lower()
                # the API's default networking (unrestricted): egress through a pooled slot, or cold
                env = ok(await http.post("/v1/environments", json={"name": f"bench-{suffix}"}))["id"]
                isolated = ok(
                    await http.post("/v1/environments", json={"name": f"bench-isolated-{suffix}", "config": ISOLATED})
                )["id"]
                await script_model_ttft(stack)
                ttft = Ttft(http, sandboxes, model)

                say("warming up ...")
                await ttft.sample(plain_agent["id"], env, release=False)
                await ttft.sample(tools_agent["id"], env, release=True)

                say(f"measuring warm-pool provisions, isolated and default environments (pool size 2, n={n}) ...")
                warm, warm_server, missed = await warm_provisions(sandboxes, n, ISOLATED)
                warm_default, warm_default_server, missed_default = await warm_provisions(sandboxes, n, DEFAULT)
                say(f"measuring execute vs docker exec (n={args.execs}) ...")
                exec_rpc, exec_plain, write_rpc, exec_cpu = await exec_latency(
                    stack, sandboxes, client, image, args.execs
                )
                say(f"measuring TTFT, toolset agent with the warm pool, default and isolated (n={n} each) ...")
                ttft_warm: list[float] = []
                ttft_warm_default: list[float] = []
                for _ in range(n):
                    await sandboxes.wait_pools_full()
                    ttft_warm_default.append(await ttft.sample(tools_agent["id"], env, release=True))
                    await sandboxes.wait_pools_full()
                    ttft_warm.append(await ttft.sample(tools_agent["id"], isolated, release=True))

                say("restarting the sandbox-manager with CORRAL_SANDBOX_POOL_SIZE=0 ...")
                stack.service_env[MANAGER] = {**manager_env, "CORRAL_SANDBOX_POOL_SIZE": "0"}
                await asyncio.to_thread(stack.restart_service, MANAGER)
                say(f"measuring cold provisions vs docker run (n={n}) ...")
                cold, cold_server, docker_run = await cold_provisions(sandboxes, client, image, n)
                say(f"measuring TTFT, no tools vs toolset with cold provisioning (n={n} each, interleaved) ...")
                ttft_none: list[float] = []
                ttft_cold: list[float] = []
                ttft_cpu: dict[str, float] = {}
                steps = Steps()
                for _ in range(n):
                    before = cpu_ms(stack)
                    ttft_none.append(await ttft.sample(plain_agent["id"], env, release=False, steps=steps))
                    for name, ms in per_op(before, cpu_ms(stack), n).items():
                        ttft_cpu[name] = ttft_cpu.get(name, 0.0) + ms
                    ttft_cold.append(await ttft.sample(tools_agent["id"], env, release=True))
                model_url = f"http://127.0.0.1:{stack.ports.embedded_model}"
                say(f"measuring the direct model request, the B3 baseline (n={n}) ...")
                direct = await direct_ttft(model_url, n)
            client.close()
        finally:
            stack.stop()

    # The ratio of whole TTFTs (model TTFT included), as B3 states its target.
    ratio_cold = (pct(ttft_cold, 0.5) + MODEL_TTFT_MS) / (pct(ttft_none, 0.5) + MODEL_TTFT_MS)
    ratio_warm = (pct(ttft_warm, 0.5) + MODEL_TTFT_MS) / (pct(ttft_none, 0.5) + MODEL_TTFT_MS)
    ratio_warm_default = (pct(ttft_warm_default, 0.5) + MODEL_TTFT_MS) / (pct(ttft_none, 0.5) + MODEL_TTFT_MS)
    lat = Figure.latency
    dr, dx, dm = "docker run", "docker exec", "direct model request"
    b3 = "p50 <= 20 ms, p95 <= 50 ms"
    figures = [
        lat("B4", "baseline: docker run --rm --network none true", docker_run),
        lat(
            "B4",
            "ready, warm pool, default env (provision RPC)",
            warm_default,
            baseline_ms=docker_run,
            baseline_name=dr,
            target="p50 < 50 ms, p99 < 150 ms",
            note=f"{missed_default} of {n} missed the pool",
        ),
        lat("B4", "manager's ready_ms, warm pool, default env", warm_default_server),
        lat(
            "B4",
            "ready, warm pool, isolated env (provision RPC)",
            warm,
            baseline_ms=docker_run,
            baseline_name=dr,
            target="p50 < 50 ms, p99 < 150 ms",
            note=f"{missed} of {n} missed the pool",
        ),
        lat("B4", "manager's ready_ms, warm pool, isolated env", warm_server),
        lat(
            "B4",
            "ready, cold, pool size 0 (provision RPC)",
            cold,
            baseline_ms=docker_run,
            baseline_name=dr,
            target="p50 < 400 ms",
        ),
        lat("B4", "manager's ready_ms, cold", cold_server),
        lat("B4", "baseline: docker exec bash -c 'echo hi'", exec_plain),
        lat(
            "B4",
            "exec: execute bash 'echo hi' over the bus",
            exec_rpc,
            baseline_ms=exec_plain,
            baseline_name=dx,
            target="p50 < 5 ms",
            cpu_ms_per_op=exec_cpu,
        ),
        lat("B4", "exec: execute write 10 KB over the bus", write_rpc, baseline_ms=exec_plain, baseline_name=dx),
        lat("B3", "baseline: direct model request, TTFT - model TTFT", direct),
        lat(
            "B3",
            "TTFT overhead, agent without tools",
            ttft_none,
            baseline_ms=direct,
            baseline_name=dm,
            target=b3,
            cpu_ms_per_op=ttft_cpu,
            note=f"p95 {pct(ttft_none, 0.95):.2f} ms; create + message -> first token",
        ),
        lat(
            "B3",
            "TTFT overhead, toolset, cold + egress (default)",
            ttft_cold,
            baseline_ms=direct,
            baseline_name=dm,
            target=b3,
            note=f"p95 {pct(ttft_cold, 0.95):.2f} ms",
        ),
        lat(
            "B3",
            "TTFT overhead, toolset, warm pool, default env",
            ttft_warm_default,
            baseline_ms=direct,
            baseline_name=dm,
            target=b3,
            note=f"p95 {pct(ttft_warm_default, 0.95):.2f} ms",
        ),
        lat(
            "B3",
            "TTFT overhead, toolset, warm pool, isolated env",
            ttft_warm,
            baseline_ms=direct,
            baseline_name=dm,
            target=b3,
            note=f"p95 {pct(ttft_warm, 0.95):.2f} ms",
        ),
        *(lat("extra", f"B3 without tools, step: {step}", ms) for step, ms in steps.ms.items()),
        Figure("B3", "TTFT p50 ratio, toolset cold / no tools", ratio_cold, "x", target="1.00 +- 0.05"),
        Figure("B3", "TTFT p50 ratio, toolset warm default / none", ratio_warm_default, "x", target="1.00 +- 0.05"),
        Figure("B3", "TTFT p50 ratio, toolset warm isolated / none", ratio_warm, "x", target="1.00 +- 0.05"),
    ]
    cores = os.cpu_count() or 0
    took = time.perf_counter() - began
    finish(f"B3 / B4 on the local stack with Docker ({cores} cores), run took {took:.0f} s", figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
