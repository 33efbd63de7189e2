"""What a three-node NATS JetStream cluster (``CORRAL_NATS_CLUSTER=3``, three replicas) costs next to
one server, measured in one run on two private local stacks (services, embedded model, no Docker):

  * POST /v1/sessions/{id}/events -> the event on that session's SSE stream (each message also runs
    a turn, waited for before the next sample);
  * sequential session creates per second over HTTP;
  * one stream's append rate: ``--writers`` sessions, each appending one event at a time the way a
    harness does (bus request to the session-store, lease held) for ``--seconds``: the events/s the
    session log stream (``CORRAL_SESSIONS``, every session's events) took, and the CPU each process
    spent per event (NATS per node: the stream's leader is the busiest);
  * the same stream's ceiling without Corral: ``--writers`` JetStream publishers on a bare stream of
    the same kind and the same replicas, each awaiting its ack.

    uv run python bench/cluster.py [--samples 100] [--creates 200] [--writers 16] [--seconds 5] [--json PATH]

On one machine the three servers share its CPUs and disk: the figures show the price of the
replication protocol (each write acknowledged by two of three servers), not of a network between them.
CPU per operation (from /proc) is the steadier figure on a shared machine; the rates move with its load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from report import Figure, finish, ok, say
from stack_cpu import cpu_ms, own_cpu_ms, per_op

from corral.bus import Bus
from corral.contracts.rpc import AppendEvents, Lease, Op, RpcReply
from corral.contracts.subjects import StreamSpec, lease_spec, store_rpc
from corral.devstack.configuration import SYNC_INTERVAL_VAR, sync_interval
from corral.devstack.ports import Ports
from corral.devstack.stack import Stack

MESSAGE = {"events": [{"type": "user.message", "content": [{"type": "text", "text": "ping"}]}]}
#: A stream of the session log's kind (file storage, limits), for the ceiling without Corral.
BARE_SPEC = StreamSpec(
    name="CORRAL_BENCH_CLUSTER",
    subjects=("corral.benchcl.>",),
    retention="limits",
    storage="file",
    duplicate_window_s=120.0,
)
#: The stack's lease TTL (the session-store's default), which the leases taken here must match.
LEASE_TTL_S = 10.0


@dataclass
class Figures:
    append_to_sse_ms: list[float] = field(default_factory=list)
    append_cpu: dict[str, float] = field(default_factory=dict)
    creates_per_s: float = 0.0
    creates: int = 0
    creates_cpu: dict[str, float] = field(default_factory=dict)
    stream_rate: float = 0.0
    stream_events: int = 0
    stream_cpu: dict[str, float] = field(default_factory=dict)
    bare_rate: float = 0.0
    bare_messages: int = 0
    bare_cpu: dict[str, float] = field(default_factory=dict)


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


def with_client(cpu: dict[str, float], own_before: float, ops: int) -> dict[str, float]:
    return cpu | {"bench-client": (own_cpu_ms() - own_before) / max(1, ops)}


async def append_to_sse(
    stack: Stack, http: httpx.AsyncClient, body: dict[str, str], samples: int, out: Figures
) -> None:
    session_id = ok(await http.post("/v1/sessions", json=body))["id"]
    watcher = Watcher()
    reading = asyncio.create_task(watcher.run(http, session_id))
    try:
        async with asyncio.timeout(30):
            await watcher.ready.wait()
        before = cpu_ms(stack)
        for _ in range(samples):
            watcher.idle.clear()
            t0 = time.perf_counter()
            event_id = ok(await http.post(f"/v1/sessions/{session_id}/events", json=MESSAGE))["data"][0]["id"]
            out.append_to_sse_ms.append((await watcher.wait_for(event_id) - t0) * 1000)
            async with asyncio.timeout(60):
                await watcher.idle.wait()
        out.append_cpu = per_op(before, cpu_ms(stack), samples)
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)


async def session_creates(
    stack: Stack, http: httpx.AsyncClient, body: dict[str, str], count: int, out: Figures
) -> None:
    for _ in range(20):  # warm-up
        ok(await http.post("/v1/sessions", json=body))
    before, own = cpu_ms(stack), own_cpu_ms()
    t0 = time.perf_counter()
    for _ in range(count):
        ok(await http.post("/v1/sessions", json=body))
    out.creates_per_s = count / (time.perf_counter() - t0)
    out.creates = count
    out.creates_cpu = with_client(per_op(before, cpu_ms(stack), count), own, count)


async def stream_appends(
    stack: Stack, http: httpx.AsyncClient, bus: Bus, body: dict[str, str], writers: int, seconds: float, out: Figures
) -> None:
    """``writers`` sessions, each appending one ``agent.thinking`` at a time as a harness would."""
    leases = await bus.ensure_key_value(lease_spec(LEASE_TTL_S))
    held: dict[str, Lease] = {}
    for _ in range(writers):
        session_id = ok(await http.post("/v1/sessions", json=body))["id"]
        token = secrets.token_hex(8)
        await leases.create(session_id, json.dumps({"holder": "bench", "token": token}).encode())
        held[session_id] = Lease(holder="bench", token=token)

    async def append(session_id: str, event: dict[str, Any]) -> None:
        request = AppendEvents(
            workspace_id=None, session_id=session_id, events=[event], origin="harness", lease=held[session_id]
        )
        reply = RpcReply.model_validate_json(
            await bus.request(store_rpc(Op.EVENTS_APPEND), request.model_dump_json().encode())
        )
        if not reply.ok:
            raise SystemExit(f"append refused: {reply.error}")

    for session_id in held:
        await append(session_id, {"type": "session.status_running"})

    async def writer(session_id: str, stop: float) -> int:
        sent = 0
        while time.perf_counter() < stop:
            await append(session_id, {"type": "agent.thinking"})
            sent += 1
        return sent

    before, own = cpu_ms(stack), own_cpu_ms()
    began = time.perf_counter()
    stop = began + seconds
    total = sum(await asyncio.gather(*(writer(sid, stop) for sid in held)))
    out.stream_rate = total / (time.perf_counter() - began)
    out.stream_events = total
    out.stream_cpu = with_client(per_op(before, cpu_ms(stack), total), own, total)


async def bare_publishes(stack: Stack, bus: Bus, writers: int, seconds: float, out: Figures) -> None:
    await bus.ensure_stream(BARE_SPEC)
    payload = json.dumps({"type": "agent.thinking", "id": "sevt_" + "x" * 26, "processed_at": "x" * 27}).encode()

    async def publisher(i: int, stop: float) -> int:
        sent = 0
        while time.perf_counter() < stop:
            await bus.publish(f"corral.benchcl.s{i}", payload)
            sent += 1
        return sent

    before, own = cpu_ms(stack), own_cpu_ms()
    began = time.perf_counter()
    stop = began + seconds
    total = sum(await asyncio.gather(*(publisher(i, stop) for i in range(writers))))
    out.bare_rate = total / (time.perf_counter() - began)
    out.bare_messages = total
    out.bare_cpu = with_client(per_op(before, cpu_ms(stack), total), own, total)


async def measure(stack: Stack, args: argparse.Namespace) -> Figures:
    out = Figures()
    limits = httpx.Limits(max_connections=args.writers + 20, max_keepalive_connections=args.writers + 20)
    async with (
        httpx.AsyncClient(
            base_url=stack.gateway_url, headers={"x-api-key": stack.api_key}, timeout=60, limits=limits
        ) as http,
        Bus.connect(stack.nats_settings(), name="bench-cluster") as bus,
    ):
        agent = ok(await http.post("/v1/agents", json={"name": "bench", "model": "claude-sonnet-4-6"}))
        env = ok(await http.post("/v1/environments", json={"name": f"bench-{agent['id'].lower()}"}))
        body = {"agent": agent["id"], "environment_id": env["id"]}
        await append_to_sse(stack, http, body, args.samples, out)
        await session_creates(stack, http, body, args.creates, out)
        await stream_appends(stack, http, bus, body, args.writers, args.seconds, out)
        await bare_publishes(stack, bus, args.writers, args.seconds, out)
    return out


def environ(cluster: int) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "ANTHROPIC_", "OTEL_"))}
    # Only the durability setting comes from the environment (as in core_flow.py and throughput.py).
    fsync = {SYNC_INTERVAL_VAR: sync} if (sync := os.environ.get(SYNC_INTERVAL_VAR)) else {}
    return base | fsync | {"CORRAL_NATS_CLUSTER": str(cluster), "CORRAL_GATEWAY_RATE_LIMIT_RPS": "0"}


def run_on(cluster: int, root: Path, args: argparse.Namespace) -> Figures:
    stack = Stack(
        root / f"nats-{cluster}",
        Ports.free(),
        environ=environ(cluster),
        harness_count=1,
        docker=False,
        log_level="WARNING",
    )
    try:
        stack.start(timeout=180)
        return asyncio.run(measure(stack, args))
    finally:
        stack.stop()


def nats_total(cpu: dict[str, float]) -> float:
    return sum(ms for name, ms in cpu.items() if name == "nats" or name.startswith("nats-"))


def nats_busiest(cpu: dict[str, float]) -> float:
    return max((ms for name, ms in cpu.items() if name == "nats" or name.startswith("nats-")), default=0.0)


def figures_of(label: str, got: Figures, single: Figures | None, args: argparse.Namespace) -> list[Figure]:
    """The figures of one stack; the cluster's next to the single server's as their baseline."""
    base = "one server" if single is not None else ""
    leader = nats_busiest(got.stream_cpu)
    return [
        Figure.latency(
            "cluster",
            f"POST user.message -> SSE, {label}",
            got.append_to_sse_ms,
            baseline_ms=single.append_to_sse_ms if single else None,
            baseline_name=base,
            cpu_ms_per_op=got.append_cpu,
            note="each message also runs a turn, waited for before the next",
        ),
        Figure(
            "cluster",
            f"session creates, sequential, {label}",
            got.creates_per_s,
            "/s",
            n=got.creates,
            baseline=single.creates_per_s if single else None,
            baseline_name=base,
            cpu_ms_per_op=got.creates_cpu,
        ),
        Figure(
            "cluster",
            f"one stream's appends, {args.writers} harness-style writers, {label}",
            got.stream_rate,
            "events/s",
            n=got.stream_events,
            baseline=got.bare_rate,
            baseline_name="bare JetStream publishes, same replicas",
            cpu_ms_per_op=got.stream_cpu,
            note=(
                f"NATS CPU per event {nats_total(got.stream_cpu):.3f} ms (all nodes), "
                f"{leader:.3f} ms (busiest node, the stream's leader): one core's ceiling "
                f"~{1000 / leader if leader else float('nan'):.0f} events/s for NATS alone"
            ),
        ),
        Figure(
            "cluster",
            f"bare JetStream publishes, {args.writers} publishers, {label}",
            got.bare_rate,
            "msg/s",
            n=got.bare_messages,
            cpu_ms_per_op=got.bare_cpu,
        ),
        Figure("cluster", f"NATS CPU per appended event, all nodes, {label}", nats_total(got.stream_cpu), "ms"),
        Figure("cluster", f"NATS CPU per appended event, busiest node, {label}", leader, "ms"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100, help="messages posted (one turn each)")
    parser.add_argument("--creates", type=int, default=200, help="sessions created, one after another")
    parser.add_argument("--writers", type=int, default=16, help="sessions appending to the stream at once")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the writers append (at most 8 s)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not 0 < args.seconds <= 8:
        parser.error(f"--seconds must be in (0, 8]: the leases taken for the writers last {LEASE_TTL_S:.0f} s")
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="corral-bench-cluster-") as tmp:
        for label, size in (("one server", 1), ("3-node cluster R3", 3)):
            say(f"{label}: starting a stack ...")
            results[label] = run_on(size, Path(tmp), args)
    single = results["one server"]
    figures = figures_of("one server", single, None, args) + figures_of(
        "3-node cluster R3", results["3-node cluster R3"], single, args
    )
    fsync = sync_interval(os.environ.get(SYNC_INTERVAL_VAR))
    finish(
        f"One NATS server vs a 3-node cluster ({os.cpu_count() or 0} cores, NATS sync_interval {fsync})",
        figures,
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
