"""B7: event-store throughput through the public API, on a private local stack (real NATS, Postgres,
services, embedded model), once per NATS sync setting.

For each ``--sync`` setting (default: ``2m``, NATS's own default, and ``always``, an fsync per
stored write) a stack is started with ``CORRAL_NATS_SYNC_INTERVAL`` set to it, and measured:

- the baseline: ``--clients`` concurrent publishers on a bare JetStream stream (file storage, the
  same sync setting), each awaiting its ack;
- ``--clients`` clients, each with its own session, appending ``user.message`` events with
  ``POST /v1/sessions/{id}/events`` for ``--seconds`` seconds, each request waited for: once with
  one event per request, once with ``--batch`` events per request (``events`` is a list). Every
  client event type wakes the session's harness (there is no client event that does not), so the
  harness runs turns against the embedded model meanwhile; turns coalesce while the session is
  busy, so the model's share per event falls as events arrive faster.

Printed per setting and per events-per-request: events/s (all clients together) next to the
baseline's msg/s, the POST round trip p50/p99, the projection lag p50/p99 and the CPU per appended
event of each stack process. The projection lag is sampled every ``--lag-every-ms``: the sessions
stream's last sequence is read (every append acknowledged by then is at or below it), and the lag is
the time until the session-store's projector announces (Postgres ``NOTIFY``, sent with the commit)
that its committed position reached it, that is, until those events' rows are visible in Postgres.

    uv run python bench/throughput.py [--clients 16] [--seconds 20] [--batch 16] [--sync 2m always] [--json PATH]

Target (reported, not asserted): >= 5,000 events/s aggregate, projection lag p99 < 250 ms (``2m``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from report import Figure, finish, ok, say
from stack_cpu import cpu_ms, own_cpu_ms, per_op

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.subjects import StreamSpec
from corral.devstack.configuration import SYNC_INTERVAL_VAR, sync_interval
from corral.devstack.ports import Ports
from corral.devstack.stack import Stack
from corral.session_store.session_projection import POSITION_CHANNEL
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


@dataclass
class LagSampler:
    """Projection lag samples: stream position read → the projector's commit of it announced."""

    every_s: float
    samples_ms: list[float] = field(default_factory=list)
    _waiting: list[tuple[int, float]] = field(default_factory=list)
    _running: bool = False
    _drained: asyncio.Event = field(default_factory=asyncio.Event)

    async def drained(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until every sample taken so far has its commit."""
        self._drained.clear()
        if self._waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout_s)

    def heard(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        stream, _, position = str(payload).partition(" ")
        if stream != subjects.SESSIONS_STREAM or not self._running:
            return
        now, reached = time.perf_counter(), int(position)
        still = []
        for seq, at in self._waiting:
            if seq <= reached:
                self.samples_ms.append((now - at) * 1000)
            else:
                still.append((seq, at))
        self._waiting = still
        if not still:
            self._drained.set()

    @contextlib.asynccontextmanager
    async def sampling(self, bus: Bus, database_url: str) -> AsyncIterator[None]:
        conn = await asyncpg.connect(database_url)
        await conn.add_listener(POSITION_CHANNEL, self.heard)

        async def sample() -> None:
            while True:
                seq = await bus.stream_last_seq(subjects.SESSIONS_STREAM)
                self._waiting.append((seq, time.perf_counter()))
                await asyncio.sleep(self.every_s)

        self._running = True
        try:
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(sample())
                try:
                    yield
                finally:
                    task.cancel()
        finally:
            self._running = False
            self._waiting.clear()
            await conn.close()


@dataclass
class ApiRun:
    rate: float
    latencies: list[float]
    events: int
    requests: int
    refused: int


async def api_throughput(http: httpx.AsyncClient, ids: list[str], seconds: float, batch: int) -> ApiRun:
    """Each session's client posts ``batch`` events per request until the time is up."""
    latencies: list[float] = []
    refused = 0
    stop = time.perf_counter() + seconds

    async def client(session_id: str, i: int) -> int:
        nonlocal refused
        sent = 0
        while time.perf_counter() < stop:
            events = [
                {"type": "user.message", "content": [{"type": "text", "text": f"b7 {i} {sent + k}"}]}
                for k in range(batch)
            ]
            t0 = time.perf_counter()
            response = await http.post(f"/v1/sessions/{session_id}/events", json={"events": events})
            if response.status_code != 200:
                refused += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            sent += len(response.json()["data"])
        return sent

    began = time.perf_counter()
    total = sum(await asyncio.gather(*(client(sid, i) for i, sid in enumerate(ids))))
    return ApiRun(total / (time.perf_counter() - began), latencies, total, len(latencies), refused)


async def measure(tmp: Path, sync: str, args: argparse.Namespace) -> list[Figure]:
    say(f"[sync {sync}] starting a private stack ...")
    no_limits = {"gateway": {"CORRAL_GATEWAY_RATE_LIMIT_RPS": "0"}}
    stack = Stack(tmp, Ports.free(), environ={SYNC_INTERVAL_VAR: sync}, service_env=no_limits, log_level="WARNING")
    stack.start(timeout=180)
    figures: list[Figure] = []
    try:
        say(f"[sync {sync}] baseline: {args.clients} JetStream publishers for {args.seconds:g} s ...")
        nats_rate, acks = await nats_throughput(stack.nats_settings(), args.clients, args.seconds)
        figures += [
            Figure("B7", f"baseline: JetStream publish, {args.clients} publishers, sync {sync}", nats_rate, "msg/s"),
            Figure.latency("B7", f"baseline: JetStream publish ack, sync {sync}", acks),
        ]
        limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
        async with (
            httpx.AsyncClient(
                base_url=stack.gateway_url, headers={"x-api-key": stack.api_key}, timeout=60, limits=limits
            ) as http,
            Bus.connect(stack.nats_settings(), name="bench-b7-lag") as bus,
        ):
            agent = ok(await http.post("/v1/agents", json={"name": "b7", "model": "claude-sonnet-4-6"}))
            env = ok(await http.post("/v1/environments", json={"name": f"b7-{agent['id'].lower()}"}))["id"]
            body = {"agent": agent["id"], "environment_id": env}
            ids = [ok(await http.post("/v1/sessions", json=body))["id"] for _ in range(args.clients)]
            await api_throughput(http, ids, min(2.0, args.seconds), 1)  # warm-up
            for batch in sorted({1, args.batch}):
                say(f"[sync {sync}] {args.clients} API clients, {batch} event(s) per POST, {args.seconds:g} s ...")
                lag = LagSampler(args.lag_every_ms / 1000)
                async with lag.sampling(bus, stack.database_url):
                    before, own = cpu_ms(stack), own_cpu_ms()
                    run = await api_throughput(http, ids, args.seconds, batch)
                    cpu = per_op(before, cpu_ms(stack), run.events)
                    cpu["bench-client"] = (own_cpu_ms() - own) / max(1, run.events)
                    # the last samples' commits: wait for them (bounded) so the tail is counted
                    await lag.drained(5.0)
                per = f"{batch} event{'s' if batch > 1 else ''}/POST"
                figures += [
                    Figure(
                        "B7",
                        f"events appended via POST /events, {args.clients} clients, {per}, sync {sync}",
                        run.rate,
                        "events/s",
                        n=run.events,
                        baseline=nats_rate,
                        baseline_name="JetStream publish",
                        target=">= 5000 events/s" if sync != "always" else "published",
                        cpu_ms_per_op=cpu,
                        note=f"{run.requests} requests, {run.refused} refused; every user.message wakes the harness",
                    ),
                    Figure.latency(
                        "B7",
                        f"POST /events round trip, {per}, sync {sync}",
                        run.latencies,
                        baseline_ms=acks,
                        baseline_name="JetStream ack",
                    ),
                    Figure.latency(
                        "B7",
                        f"projection lag (stream -> Postgres commit), {per}, sync {sync}",
                        lag.samples_ms,
                        target="p99 < 250 ms" if sync != "always" else "",
                    ),
                ]
    finally:
        stack.stop()
    return figures


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=16, help="events per POST in the batched run (1..50)")
    parser.add_argument("--sync", nargs="+", default=["2m", "always"], help="NATS sync settings, one stack each")
    parser.add_argument("--lag-every-ms", type=float, default=50.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    figures: list[Figure] = []
    for sync in map(sync_interval, args.sync):
        with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
            figures += await measure(Path(tmp), sync, args)
    title = f"B7 on the local stack ({os.cpu_count() or 0} cores, NATS sync {' and '.join(args.sync)})"
    finish(title, figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
