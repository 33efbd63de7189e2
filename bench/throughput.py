"""B7: event-store throughput through the public API, on a private local stack (real NATS, Postgres,
services, embedded model).

``--clients`` clients (default 16), each with its own session, append ``user.message`` events with
``POST /v1/sessions/{id}/events`` (one event per request, each waited for) for ``--seconds`` seconds;
every message also wakes the harness, which runs a turn against the embedded model. Prints the
events appended per second (all clients together), the request latency, and the CPU per appended
event of each stack process, next to the baseline measured in the same run: the same number of
concurrent publishers on a bare JetStream stream (file storage, same fsync policy), each awaiting
its ack.

    uv run python bench/throughput.py [--clients 16] [--seconds 20] [--json PATH]

Target (reported, not asserted): >= 5,000 events/s aggregate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
from report import Figure, finish, ok, say
from stack_cpu import cpu_ms, own_cpu_ms, per_op

from corral.bus import Bus
from corral.contracts.subjects import StreamSpec
from corral.devstack.configuration import SYNC_INTERVAL_VAR, sync_interval
from corral.devstack.ports import Ports
from corral.devstack.stack import Stack
from corral.settings import NatsSettings

BENCH_SPEC = StreamSpec(
    name="CORRAL_BENCH_B7", subjects=("corral.benchb7.>",), retention="limits", storage="file", duplicate_window_s=120.0
)


async def nats_throughput(settings: NatsSettings, clients: int, seconds: float) -> tuple[float, list[float]]:
    """``clients`` concurrent JetStream publishers, each awaiting its ack: messages/s and ack times."""
    async with Bus.connect(settings, name="bench-b7") as bus:
        await bus.ensure_stream(BENCH_SPEC)
        payload = json.dumps({"type": "user.message", "content": [{"type": "text", "text": "x" * 300}]}).encode()
        acks: list[float] = []
        stop = time.perf_counter() + seconds

        async def publisher(i: int) -> int:
            sent = 0
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                await bus.publish(f"corral.benchb7.s{i}", payload)
                acks.append((time.perf_counter() - t0) * 1000)
                sent += 1
            return sent

        began = time.perf_counter()
        total = sum(await asyncio.gather(*(publisher(i) for i in range(clients))))
        return total / (time.perf_counter() - began), acks


async def api_throughput(
    http: httpx.AsyncClient, ids: list[str], seconds: float
) -> tuple[float, list[float], int, int]:
    """Each session's client posts one event per request until the time is up."""
    latencies: list[float] = []
    refused = 0
    stop = time.perf_counter() + seconds

    async def client(session_id: str, i: int) -> int:
        nonlocal refused
        sent = 0
        while time.perf_counter() < stop:
            body = {"events": [{"type": "user.message", "content": [{"type": "text", "text": f"b7 {i} {sent}"}]}]}
            t0 = time.perf_counter()
            response = await http.post(f"/v1/sessions/{session_id}/events", json=body)
            if response.status_code != 200:
                refused += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            sent += len(response.json()["data"])
        return sent

    began = time.perf_counter()
    total = sum(await asyncio.gather(*(client(sid, i) for i, sid in enumerate(ids))))
    return total / (time.perf_counter() - began), latencies, total, refused


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        say("starting a private stack ...")
        environ = {SYNC_INTERVAL_VAR: sync} if (sync := os.environ.get(SYNC_INTERVAL_VAR)) else {}
        no_limits = {"gateway": {"CORRAL_GATEWAY_RATE_LIMIT_RPS": "0"}}
        stack = Stack(Path(tmp), Ports.free(), environ=environ, service_env=no_limits, log_level="WARNING")
        stack.start(timeout=180)
        try:
            say(f"baseline: {args.clients} JetStream publishers for {args.seconds:.0f} s ...")
            nats_rate, acks = await nats_throughput(stack.nats_settings(), args.clients, args.seconds)
            limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
            headers = {"x-api-key": stack.api_key}
            async with httpx.AsyncClient(
                base_url=stack.gateway_url, headers=headers, timeout=60, limits=limits
            ) as http:
                agent = ok(await http.post("/v1/agents", json={"name": "b7", "model": "claude-sonnet-4-6"}))
                env = ok(await http.post("/v1/environments", json={"name": f"b7-{agent['id'].lower()}"}))["id"]
                body = {"agent": agent["id"], "environment_id": env}
                ids = [ok(await http.post("/v1/sessions", json=body))["id"] for _ in range(args.clients)]
                await api_throughput(http, ids, min(2.0, args.seconds))  # warm-up
                say(f"{args.clients} API clients appending for {args.seconds:.0f} s ...")
                before, own = cpu_ms(stack), own_cpu_ms()
                rate, latencies, total, refused = await api_throughput(http, ids, args.seconds)
                cpu = per_op(before, cpu_ms(stack), total)
                cpu["bench-client"] = (own_cpu_ms() - own) / max(1, total)
        finally:
            stack.stop()

    fsync = sync_interval(os.environ.get(SYNC_INTERVAL_VAR))
    figures = [
        Figure("B7", f"baseline: JetStream publish, {args.clients} publishers awaiting acks", nats_rate, "msg/s"),
        Figure.latency("B7", "baseline: JetStream publish ack", acks),
        Figure(
            "B7",
            f"events appended via POST /events, {args.clients} clients",
            rate,
            "events/s",
            n=total,
            baseline=nats_rate,
            baseline_name="JetStream publish",
            target=">= 5000 events/s",
            cpu_ms_per_op=cpu,
            note=f"NATS sync_interval {fsync}; {refused} requests refused; each message also runs a turn",
        ),
        Figure.latency(
            "B7", "POST /events latency under that load", latencies, baseline_ms=acks, baseline_name="JetStream ack"
        ),
    ]
    finish(f"B7 on the local stack ({os.cpu_count() or 0} cores, NATS sync_interval {fsync})", figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
