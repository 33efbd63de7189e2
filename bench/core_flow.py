"""Benchmark of the core flow on a private local stack (real NATS, Postgres, services, embedded model).

Prints, next to a bare NATS baseline measured in the same run:
  * B2: a harness-style append (bus request to session-store, lease held) -> the frame on that
    session's SSE stream, with `--sessions` sessions (default 100) each holding an open stream;
  * POST /v1/sessions/{id}/events -> the event on the SSE stream (each message also runs a turn), and
    the POST's round trip through a minimal keep-alive client;
  * sequential session creates per second over HTTP, through httpx and through a minimal
    keep-alive client (the server's rate), with the CPU each stack process spent per create.

    uv run python bench/core_flow.py [--sessions 100] [--samples 400] [--creates 400]

Targets (reported, not asserted): append->SSE p50 <= 2 ms, p99 <= 10 ms; >= 400 creates/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from report import Figure, finish, ok, say
from session_creates import KeepAliveClient, post_request, session_creates
from stack_cpu import cpu_ms, per_op

from corral.bus import Bus
from corral.contracts.ids import EVENT, new_id
from corral.contracts.rpc import AppendEvents, Lease, Op, RpcReply
from corral.contracts.subjects import StreamSpec, lease_spec, store_rpc
from corral.devstack.configuration import SYNC_INTERVAL_VAR, sync_interval
from corral.devstack.ports import Ports
from corral.devstack.stack import Stack
from corral.settings import NatsSettings

#: A stream of the same kind as the session log (file storage, limits), used only for the baseline.
BENCH_SPEC = StreamSpec(
    name="CORRAL_BENCH", subjects=("corral.bench.>",), retention="limits", storage="file", duplicate_window_s=120.0
)


async def nats_baseline(settings: NatsSettings, samples: int) -> tuple[list[float], list[float]]:
    """Core publish->subscribe and JetStream publish->ordered-consumer, one message at a time."""
    core: list[float] = []
    stored: list[float] = []
    async with Bus.connect(settings, name="bench") as bus:
        got: asyncio.Queue[float] = asyncio.Queue()

        async def sink() -> None:
            async for _ in bus.subscribe_core("bench.baseline"):
                got.put_nowait(time.perf_counter())

        task = asyncio.create_task(sink())
        await asyncio.sleep(0.2)
        for _ in range(samples):
            t0 = time.perf_counter()
            await bus.publish_core("bench.baseline", b"x" * 400)
            core.append((await got.get() - t0) * 1000)
        task.cancel()

        await bus.ensure_stream(BENCH_SPEC)
        subject = "corral.bench.baseline"
        follower = bus.follow(BENCH_SPEC.name, subject)
        first = asyncio.ensure_future(follower.__anext__())
        await asyncio.sleep(0.2)
        pending = first
        for i in range(samples):
            t0 = time.perf_counter()
            await bus.publish(subject, json.dumps({"i": i, "pad": "x" * 380}).encode())
            await pending
            stored.append((time.perf_counter() - t0) * 1000)
            pending = asyncio.ensure_future(follower.__anext__())
        pending.cancel()
        await follower.aclose()  # type: ignore[attr-defined]  # an async generator underneath
    return core, stored


class SseWatcher:
    """Reads one session's SSE stream and timestamps each event id as it arrives."""

    def __init__(self, http: httpx.AsyncClient, session_id: str) -> None:
        self.http = http
        self.session_id = session_id
        self.seen: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with self.http.stream("GET", f"/v1/sessions/{self.session_id}/events/stream") as response:
            self.ready.set()
            async for raw in response.aiter_lines():
                if raw.startswith("id: "):
                    now = time.perf_counter()
                    event_id = raw[4:]
                    waiter = self.waiters.pop(event_id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(now)
                    else:
                        self.seen[event_id] = now


async def all_idle(http: httpx.AsyncClient, session_ids: list[str], timeout_s: float = 60.0) -> None:
    """Until every session is idle again."""
    deadline = time.monotonic() + timeout_s
    for session_id in session_ids:
        for _ in range(int(timeout_s / 0.02)):
            if ok(await http.get(f"/v1/sessions/{session_id}"))["status"] == "idle":
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"session {session_id} was still busy {timeout_s:.0f} s after the last POST")
            await asyncio.sleep(0.02)


async def append_to_sse(stack: Stack, sessions: int, samples: int) -> tuple[list[float], list[float]]:
    headers = {"x-api-key": stack.api_key}
    limits = httpx.Limits(max_connections=sessions + 20, max_keepalive_connections=sessions + 20)
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=60, limits=limits) as http:
        agent = ok(await http.post("/v1/agents", json={"name": "bench", "model": "claude-sonnet-4-6"}))
        env = ok(await http.post("/v1/environments", json={"name": f"bench-{agent['id'].lower()}"}))
        ids = []
        for _ in range(sessions):
            ids.append(
                (await http.post("/v1/sessions", json={"agent": agent["id"], "environment_id": env["id"]})).json()["id"]
            )
        watchers = [SseWatcher(http, sid) for sid in ids]
        tasks = [asyncio.create_task(w.run()) for w in watchers]
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in watchers)), 60)
        latencies: list[float] = []
        posts: list[float] = []
        rng = random.Random(7)
        body = {"events": [{"type": "user.message", "content": [{"type": "text", "text": "ping"}]}]}
        # The POSTs go through a minimal keep-alive client: httpx spends ~3 ms of this process's CPU
        # per request (session_creates' httpx and lean rates), which the POST's round trip is not.
        lean = await KeepAliveClient.connect(stack.gateway_url)
        for _ in range(samples):
            watcher = rng.choice(watchers)
            request = post_request(f"/v1/sessions/{watcher.session_id}/events", body, stack.api_key)
            t0 = time.perf_counter()
            status, answer = await lean.exchange(request)
            posts.append((time.perf_counter() - t0) * 1000)
            if b" 200 " not in status:
                raise SystemExit(f"POST events answered {status!r}: {answer[:500]!r}")
            event_id = json.loads(answer)["data"][0]["id"]
            arrived = watcher.seen.pop(event_id, None)
            if arrived is None:
                future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                watcher.waiters[event_id] = future
                arrived = await asyncio.wait_for(future, 30)
            latencies.append((arrived - t0) * 1000)
        await lean.aclose()
        await all_idle(http, ids)  # the turns the POSTs started end here, not in what is measured next
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return latencies, posts


async def emit_to_sse(stack: Stack, sessions: int, samples: int) -> tuple[list[float], dict[str, float]]:
    """B2 proper: a harness-style append over the bus (lease held) -> the frame on the SSE stream."""
    headers = {"x-api-key": stack.api_key}
    limits = httpx.Limits(max_connections=sessions + 20, max_keepalive_connections=sessions + 20)
    async with (
        httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=60, limits=limits) as http,
        Bus.connect(stack.nats_settings(), name="bench-emitter") as bus,
    ):
        agent = ok(await http.post("/v1/agents", json={"name": "bench", "model": "claude-sonnet-4-6"}))
        env = ok(await http.post("/v1/environments", json={"name": f"emit-{agent['id'].lower()}"}))
        ids = [
            ok(await http.post("/v1/sessions", json={"agent": agent["id"], "environment_id": env["id"]}))["id"]
            for _ in range(sessions)
        ]
        leases = await bus.ensure_key_value(lease_spec(10.0))
        held: dict[str, Lease] = {}

        async def append(session_id: str, event: dict[str, Any]) -> None:
            request = AppendEvents(
                workspace_id=None, session_id=session_id, events=[event], origin="harness", lease=held[session_id]
            )
            reply = RpcReply.model_validate_json(
                await bus.request(store_rpc(Op.EVENTS_APPEND), request.model_dump_json().encode())
            )
            if not reply.ok:
                raise SystemExit(f"append refused: {reply.error}")

        for sid in ids:
            token = secrets.token_hex(8)
            await leases.create(sid, json.dumps({"holder": "bench", "token": token}).encode())
            held[sid] = Lease(holder="bench", token=token)
            await append(sid, {"type": "session.status_running"})
        watchers = [SseWatcher(http, sid) for sid in ids]
        tasks = [asyncio.create_task(w.run()) for w in watchers]
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in watchers)), 60)
        latencies: list[float] = []
        rng = random.Random(11)
        before = cpu_ms(stack)
        for _ in range(samples):
            watcher = rng.choice(watchers)
            event_id = new_id(EVENT)
            future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            watcher.waiters[event_id] = future
            t0 = time.perf_counter()
            await append(watcher.session_id, {"type": "agent.thinking", "id": event_id})
            latencies.append((await asyncio.wait_for(future, 30) - t0) * 1000)
        cpu = per_op(before, cpu_ms(stack), samples)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return latencies, cpu


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--creates", type=int, default=400)
    parser.add_argument("--create-clients", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        say("starting a private stack ...")
        # One API key drives the whole load: the per-key rate limit would measure itself, not the server.
        no_rate_limit = {"gateway": {"CORRAL_GATEWAY_RATE_LIMIT_RPS": "0"}}
        # Only the durability setting comes from the environment: JetStream's fsync policy is what the
        # figures depend on most (default ``always``: one fsync per stored write).
        environ = {SYNC_INTERVAL_VAR: sync} if (sync := os.environ.get(SYNC_INTERVAL_VAR)) else {}
        stack = Stack(Path(tmp), Ports.free(), environ=environ, service_env=no_rate_limit, log_level="WARNING")
        stack.start(timeout=180)
        try:
            say(f"stack up: gateway {stack.gateway_url}, {stack.harness_count} harness process(es), embedded model")
            core, stored = await nats_baseline(stack.nats_settings(), args.samples)
            say("measuring emit -> SSE ...")
            emitted, emit_cpu = await emit_to_sse(stack, args.sessions, args.samples)
            say("measuring POST -> SSE ...")
            sse, posts = await append_to_sse(stack, args.sessions, args.samples)
            say("measuring session creates ...")
            creates = await session_creates(stack, args.creates, args.create_clients)
        finally:
            stack.stop()

    fsync = sync_interval(os.environ.get(SYNC_INTERVAL_VAR))
    nats = "NATS core pub->sub"
    figures = [
        Figure.latency("B2", "baseline: NATS core publish -> subscribe", core),
        Figure.latency("B2", "baseline: JetStream publish -> ordered consumer", stored),
        Figure.latency(
            "B2",
            f"emit -> SSE ({args.sessions} open sessions)",
            emitted,
            baseline_ms=core,
            baseline_name=nats,
            target="p50 <= 2 ms, p99 <= 10 ms",
            cpu_ms_per_op=emit_cpu,
        ),
        Figure.latency(
            "B2",
            f"POST user.message -> SSE ({args.sessions} sessions)",
            sse,
            baseline_ms=core,
            baseline_name=nats,
            note="each message also runs a turn",
        ),
        Figure.latency("B2", "POST event -> HTTP response (lean keep-alive client)", posts),
        Figure("B7", "session creates, sequential, httpx client", creates.httpx_rate, "/s", n=args.creates),
        Figure(
            "B7",
            "session creates, sequential, lean client",
            creates.lean_rate,
            "/s",
            n=args.creates,
            target=">= 50 /s (performance.md), >= 500 /s and <= 1.5 CPU ms (ours)",
            cpu_ms_per_op=creates.cpu_ms,
        ),
        Figure(
            "extra",
            "NATS messages per session create (sent + received by the clients)",
            sum(creates.messages.values()),
            "msgs",
            n=args.creates,
            note=", ".join(f"{name} {n}" for name, n in sorted(creates.messages.items())),
        ),
        Figure(
            "B7",
            f"session creates, {args.create_clients} lean clients at once",
            creates.parallel_rate,
            "/s",
            n=args.creates,
            target=">= 800 /s (ours)",
            cpu_ms_per_op=creates.parallel_cpu_ms,
        ),
    ]
    finish(
        f"B2 / core flow on the local stack ({os.cpu_count() or 0} cores, NATS sync_interval {fsync})",
        figures,
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
