"""What a three-node NATS JetStream cluster (``CORRAL_NATS_CLUSTER=3``, three replicas) costs next to
one server, measured in one run on two private local stacks (services, embedded model, no Docker):

  * POST /v1/sessions/{id}/events -> the event on that session's SSE stream (each message also runs
    a turn, waited for before the next sample);
  * sequential session creates per second over HTTP.

    uv run python bench/cluster.py [--samples 100] [--creates 200]

On one machine the three servers share its CPUs and disk: the figures show the price of the
replication protocol (each write acknowledged by two of three servers), not of a network between them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from report import ok, pct, say

from corral.devstack.ports import Ports
from corral.devstack.stack import Stack

MESSAGE = {"events": [{"type": "user.message", "content": [{"type": "text", "text": "ping"}]}]}


@dataclass
class Figures:
    append_to_sse_ms: list[float]
    creates_per_s: float


class Watcher:
    """One session's SSE stream: when each event id arrived, and each turn's end."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.idle = asyncio.Event()
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()

    async def run(self, http: httpx.AsyncClient, session_id: str) -> None:
        async with http.stream("GET", f"/v1/sessions/{session_id}/events/stream") as response:
            self.ready.set()
            async for raw in response.aiter_lines():
                if raw.startswith("id: "):
                    self.arrived[raw[4:]] = time.perf_counter()
                    self.changed.set()
                elif raw.startswith("event: session.status_idle"):
                    self.idle.set()

    async def wait_for(self, event_id: str) -> float:
        async with asyncio.timeout(30):
            while event_id not in self.arrived:
                self.changed.clear()
                await self.changed.wait()
        return self.arrived[event_id]


async def measure(stack: Stack, samples: int, creates: int) -> Figures:
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers={"x-api-key": stack.api_key}, timeout=60) as http:
        agent = ok(await http.post("/v1/agents", json={"name": "bench", "model": "claude-sonnet-4-6"}))
        env = ok(await http.post("/v1/environments", json={"name": f"bench-{agent['id'].lower()}"}))
        body = {"agent": agent["id"], "environment_id": env["id"]}
        session_id = ok(await http.post("/v1/sessions", json=body))["id"]
        watcher = Watcher()
        reading = asyncio.create_task(watcher.run(http, session_id))
        try:
            async with asyncio.timeout(30):
                await watcher.ready.wait()
            latencies: list[float] = []
            for _ in range(samples):
                watcher.idle.clear()
                t0 = time.perf_counter()
                event_id = ok(await http.post(f"/v1/sessions/{session_id}/events", json=MESSAGE))["data"][0]["id"]
                latencies.append((await watcher.wait_for(event_id) - t0) * 1000)
                async with asyncio.timeout(60):
                    await watcher.idle.wait()
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        for _ in range(20):  # warm-up
            ok(await http.post("/v1/sessions", json=body))
        t0 = time.perf_counter()
        for _ in range(creates):
            ok(await http.post("/v1/sessions", json=body))
        rate = creates / (time.perf_counter() - t0)
    return Figures(latencies, rate)


def environ(cluster: int) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "ANTHROPIC_", "OTEL_"))}
    return base | {"CORRAL_NATS_CLUSTER": str(cluster), "CORRAL_GATEWAY_RATE_LIMIT_RPS": "0"}


def run_on(cluster: int, root: Path, samples: int, creates: int) -> Figures:
    stack = Stack(root / f"nats-{cluster}", Ports.free(), environ=environ(cluster), harness_count=1, docker=False)
    try:
        stack.start(timeout=180)
        return asyncio.run(measure(stack, samples, creates))
    finally:
        stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100, help="messages posted (one turn each)")
    parser.add_argument("--creates", type=int, default=200, help="sessions created, one after another")
    args = parser.parse_args()
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="corral-bench-cluster-") as tmp:
        for label, size in (("one server", 1), ("3-node cluster, R3", 3)):
            say(f"{label}: starting a stack ...")
            results[label] = run_on(size, Path(tmp), args.samples, args.creates)
    say("")
    say(f"{'':<22} {'POST events -> SSE p50':>24} {'p99':>10} {'session creates/s':>20}")
    for label, figures in results.items():
        lat = figures.append_to_sse_ms
        say(f"{label:<22} {pct(lat, 0.5):>21.2f} ms {pct(lat, 0.99):>7.2f} ms {figures.creates_per_s:>20.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
