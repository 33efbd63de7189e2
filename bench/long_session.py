"""Benchmark of long sessions on a private local stack (real NATS, Postgres, services, embedded model).

Prints:
  * the harness's overhead per turn over ``--turns`` turns of one session (default 500): POST
    user.message -> the model request arriving at the embedded model (which records the time each
    request arrived), for the first 50 and the last 50 turns, p50/p99;
  * B6: ``--kills`` times (default 5), kill -9 of the lease-holding harness mid-turn in a session of
    ``--events`` events (default 10,000): lease expiry -> the resumed model request (the takeover
    resumes from the session's snapshot), next to the same takeover with the snapshot deleted (the
    log folded from scratch);
  * the per-step harness cost (POST -> model request) in a session of ~100 and of ``--events`` events;
  * CPU time per turn of the harnesses (from /proc) over the first and the last turns, and of each
    process over all the turns (less noisy than wall time on a shared machine).

    uv run python bench/long_session.py [--turns 500] [--events 10000] [--kills 5]

Targets (reported, not asserted): the last 50 turns' p50 within 20 % of the first 50's; B6
takeover from a snapshot p50 < 250 ms, p99 < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from report import Figure, finish, ok, pct, say
from session_log import LEASE_TTL_S, fill, fold_baseline
from stack_cpu import cpu_ms, per_op, spent

from corral.bus import Bus, KeyValueBucket
from corral.contracts.health import Health
from corral.contracts.subjects import LEASE_BUCKET, SNAPSHOT_SPEC, health, lease_spec
from corral.devstack.ports import Ports
from corral.devstack.stack import Stack

SLOW = {"content": [{"type": "text", "text": " ".join(f"w{i}" for i in range(20))}], "chunk_delay_ms": 50}
QUICK = {"content": [{"type": "text", "text": "ok"}]}


HANDOFF_WARNING = "a turn starts after waiting for the lease hand-off"
STOP_WARNING = "the session log read did not stop when cancelled"


def harness_log_lines(stack: Stack, text: str) -> int:
    """How many lines of the harnesses' logs say ``text`` (they log at WARNING here)."""
    names = [c.name for c in stack.components() if c.name.startswith("harness-")]
    paths = [stack.log_path(name) for name in names]
    return sum(line.count(text) for path in paths if path.exists() for line in path.read_text().splitlines())


def ms(takeovers: list[Takeover]) -> list[float]:
    return [t.takeover_ms for t in takeovers]


class Session:
    """One session driven over HTTP: its SSE stream read in the background, turns timed."""

    def __init__(self, http: httpx.AsyncClient, model: httpx.AsyncClient, session_id: str, scenario: str) -> None:
        self.http = http
        self.model = model
        self.id = session_id
        self.scenario = scenario
        self.idle = asyncio.Queue[str]()
        self.deltas = asyncio.Queue[None]()
        self.ready = asyncio.Event()

    async def read(self) -> None:
        params = {"event_deltas": "agent.message"}
        async with self.http.stream("GET", f"/v1/sessions/{self.id}/events/stream", params=params) as response:
            self.ready.set()
            async for raw in response.aiter_lines():
                if not raw.startswith("data:"):
                    continue
                event = json.loads(raw[5:])
                if event.get("type") == "session.status_idle":
                    self.idle.put_nowait(event["stop_reason"]["type"])
                elif event.get("type") == "event_delta":
                    self.deltas.put_nowait(None)

    async def post(self, text: str) -> float:
        sent = time.time()
        body = {"events": [{"type": "user.message", "content": [{"type": "text", "text": text}]}]}
        ok(await self.http.post(f"/v1/sessions/{self.id}/events", json=body))
        return sent

    async def turn(self, text: str) -> float:
        """Run a turn; when its POST was sent."""
        sent = await self.post(text)
        reason = await asyncio.wait_for(self.idle.get(), 120)
        if reason != "end_turn":
            raise SystemExit(f"a turn ended with {reason}")
        return sent

    async def requests(self) -> list[dict[str, Any]]:
        answer = await self.model.get("/_corral/requests", params={"scenario": self.scenario})
        return [r for r in answer.json()["requests"] if not r["errored"]]


async def new_session(
    http: httpx.AsyncClient, model: httpx.AsyncClient, agent_env: tuple[str, str], turns: list[dict[str, Any]]
) -> tuple[Session, asyncio.Task[None]]:
    scenario = f"bench-{secrets.token_hex(4)}"
    doc = {"scenarios": [{"name": scenario, "match": f"^{scenario}", "turns": turns}]}
    ok(await model.post("/_corral/scripts", json=doc))
    agent_id, env_id = agent_env
    created = ok(await http.post("/v1/sessions", json={"agent": agent_id, "environment_id": env_id}))
    session = Session(http, model, created["id"], scenario)
    reader = asyncio.create_task(session.read())
    await asyncio.wait_for(session.ready.wait(), 30)
    return session, reader


async def overhead(session: Session, sent: list[float]) -> list[float]:
    """POST -> model request arrival (ms) for the turns posted at ``sent``, in order."""
    arrivals = sorted(r["received_at"] for r in await session.requests())
    out: list[float] = []
    for t in sent:
        later = [a for a in arrivals if a >= t]
        if later:
            out.append((later[0] - t) * 1000)
    return out


async def holder_of(leases: KeyValueBucket, session_id: str) -> tuple[str, str]:
    """The lease's holder and token, once the session is leased."""
    async with asyncio.timeout(10):
        while (entry := await leases.get(session_id)) is None:  # noqa: ASYNC110 (another process writes it)
            await asyncio.sleep(0.005)
    value = json.loads(entry.value)
    return str(value["holder"]), str(value["token"])


async def serving(bus: Bus, worker: str) -> None:
    """Wait until the harness ``worker`` answers on the bus: the stack is healthy as soon as any
    harness answers, and a harness can take seconds to start on a loaded machine; the next kill
    must find a survivor running, or it would time the restart instead of the takeover."""
    async with asyncio.timeout(120):
        while True:
            answer = Health.model_validate_json(await bus.request(health("harness"), b"{}", timeout=5))
            if answer.instance == worker:
                return
            await asyncio.sleep(0.05)


class Takeover:
    """One kill -9 of a lease holder mid-turn, timed from the lease's expiry to the resumed request."""

    def __init__(self, expired: float, noticed: float, resumed: float) -> None:
        self.expired = expired
        """When the lease expired: its last renewal as the server stamped it, plus the TTL."""
        self.noticed = noticed
        """When this bench first saw the lease gone or taken (polling): the server's expiry timer."""
        self.resumed = resumed
        """When the resumed model request reached the model."""

    @property
    def takeover_ms(self) -> float:
        return (self.resumed - self.expired) * 1000

    @property
    def server_lag_ms(self) -> float:
        return (self.noticed - self.expired) * 1000


async def takeover(stack: Stack, bus: Bus, session: Session) -> Takeover:
    """Kill -9 the lease holder mid-turn; when its lease expired and when the model was asked again.

    The expiry instant is the lease's own (its last renewal's server timestamp + the TTL), not when a
    reader first sees it gone: the server removes expired entries on a timer, and that delay is part
    of the takeover.

    The harnesses are restarted first (and each waited for until it answers): a harness keeps the
    folds of the sessions it let go and would take the session over from its own kept fold, neither
    from the snapshot nor from scratch."""
    harnesses = [c.name for c in stack.components() if c.name.startswith("harness-")]
    for name in harnesses:
        stack.restart_service(name)
    for name in harnesses:
        await serving(bus, name)
    leases = await bus.ensure_key_value(lease_spec(LEASE_TTL_S))
    while not session.deltas.empty():
        session.deltas.get_nowait()
    await session.post("go on, slowly")
    await asyncio.wait_for(session.deltas.get(), 60)
    holder, token = await holder_of(leases, session.id)
    stack.kill(holder, signal.SIGKILL)
    try:
        last_revision, renewed_at = 0, 0.0
        async with asyncio.timeout(30):
            while (entry := await leases.get(session.id)) is not None and json.loads(entry.value)["token"] == token:
                if entry.revision != last_revision:  # its time, read while the entry is still there
                    renewed = await bus.get(f"KV_{LEASE_BUCKET}", entry.revision)
                    assert renewed.time is not None
                    last_revision, renewed_at = entry.revision, renewed.time.timestamp()
                await asyncio.sleep(0.002)
        noticed = time.time()
        expired = renewed_at + LEASE_TTL_S
        reason = await asyncio.wait_for(session.idle.get(), 60)
        if reason != "end_turn":
            raise SystemExit(f"the resumed turn ended with {reason}")
    finally:
        stack.start_service(holder)
        await serving(bus, holder)
    arrivals = sorted(r["received_at"] for r in await session.requests())
    resumed = [a for a in arrivals if a >= expired]
    return Takeover(expired, noticed, resumed[0] if resumed else float("nan"))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="copy the services' logs (INFO) here, to see where time went"
    )
    args = parser.parse_args()
    window = min(50, max(1, args.turns // 2))

    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        say("starting a private stack ...")
        service_env = {
            "gateway": {"CORRAL_GATEWAY_RATE_LIMIT_RPS": "0"},
            "harness": {"CORRAL_HARNESS_LEASE_TTL_S": str(LEASE_TTL_S), "CORRAL_HARNESS_ACK_WAIT_S": str(LEASE_TTL_S)},
            "session-store": {"CORRAL_LEASE_TTL_S": str(LEASE_TTL_S)},
            "embedded-model": {"CORRAL_EMBEDDED_MODEL_MAX_RECORDED_REQUESTS": str(max(1000, args.turns + 100))},
        }
        log_level = "INFO" if args.keep_logs else "WARNING"
        # two harnesses: B6 kills the lease holder and times the other one's takeover
        stack = Stack(
            Path(tmp), Ports.free(), environ={}, service_env=service_env, harness_count=2, log_level=log_level
        )
        stack.start(timeout=180)
        try:
            headers = {"x-api-key": stack.api_key}
            async with (
                httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=60) as http,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.embedded_model}", timeout=60) as model,
                Bus.connect(stack.nats_settings(), name="bench-long") as bus,
            ):
                agent = ok(await http.post("/v1/agents", json={"name": "bench", "model": "claude-sonnet-4-6"}))
                env = ok(await http.post("/v1/environments", json={"name": f"long-{agent['id'].lower()}"}))
                agent_env = (agent["id"], env["id"])

                say(f"running {args.turns} turns in one session ...")
                long, reader = await new_session(http, model, agent_env, [QUICK] * (args.turns + 1))
                sent: list[float] = []
                cpu = [cpu_ms(stack)]
                for n in range(args.turns):
                    sent.append(await long.turn(f"{long.scenario} turn {n}"))
                    cpu.append(cpu_ms(stack))
                turns = await overhead(long, sent)
                reader.cancel()
                handoff_turns = harness_log_lines(stack, HANDOFF_WARNING)
                late_stops = harness_log_lines(stack, STOP_WARNING)

                # Before B6: its kills restart the harnesses, whose first requests pay for imports.
                small, small_reader = await new_session(http, model, agent_env, [QUICK] * 40)
                await small.turn(f"{small.scenario} start")
                await fill(bus, small.id, 100)
                await asyncio.wait_for(small.idle.get(), 60)
                before_small = cpu_ms(stack)
                steady_small = await overhead(small, [await small.turn(f"step {n}") for n in range(5)])
                small_cpu = spent(before_small, cpu_ms(stack), "harness") / 5
                small_reader.cancel()
                say(f"B6: a session of {args.events} events, {args.kills} kills ...")
                # the first 7 requests (start, after the filler, 5 steps) answer as the small session's
                turns_big = [QUICK] * 7 + [SLOW] * (4 * args.kills + 20)
                big, big_reader = await new_session(http, model, agent_env, turns_big)
                await big.turn(f"{big.scenario} start")
                await fill(bus, big.id, args.events)
                await asyncio.wait_for(big.idle.get(), 60)  # the filler's own idle
                first = await overhead(big, [await big.turn("after the filler")])  # folds the log from scratch
                before_big = cpu_ms(stack)
                steady_big = await overhead(big, [await big.turn(f"step {n}") for n in range(5)])
                big_cpu = spent(before_big, cpu_ms(stack), "harness") / 5
                folds, logged = await fold_baseline(http, big.id, max(5, args.kills))
                before_takeovers = cpu_ms(stack)
                from_snapshot = [await takeover(stack, bus, big) for _ in range(args.kills)]
                # per_op: a killed and restarted harness counts from zero, never as a negative figure
                takeover_cpu = per_op(before_takeovers, cpu_ms(stack), args.kills)
                snapshots = await bus.object_bucket(SNAPSHOT_SPEC)
                from_scratch: list[Takeover] = []
                for _ in range(args.kills):
                    await snapshots.delete(big.id)
                    from_scratch.append(await takeover(stack, bus, big))
                big_reader.cancel()

        finally:
            stack.stop()
            if args.keep_logs:
                shutil.copytree(Path(tmp) / "logs", args.keep_logs, dirs_exist_ok=True)

    if args.keep_logs:
        for t in from_snapshot + from_scratch:
            say(f"  takeover: noticed +{t.server_lag_ms:.0f} ms, resumed +{t.takeover_ms:.0f} ms after the expiry")
    first_cpu = spent(cpu[0], cpu[window], "harness") / window
    last_cpu = spent(cpu[-window - 1], cpu[-1], "harness") / window
    turn_cpu = {name: (cpu[-1][name] - cpu[0].get(name, 0.0)) / len(sent) for name in sorted(cpu[-1])}
    ratio = pct(turns[-window:], 0.5) / pct(turns[:window], 0.5)
    fold = f"fold of the same {logged} events"
    lags = [t.server_lag_ms for t in from_snapshot + from_scratch]
    figures = [
        Figure.latency("extra", f"turn overhead, POST -> model request, turns 1-{window}", turns[:window]),
        Figure.latency(
            "extra",
            f"turn overhead, turns {len(turns) - window + 1}-{len(turns)}",
            turns[-window:],
            cpu_ms_per_op=turn_cpu,
            note=f"harness CPU per turn {first_cpu:.1f} ms (first) / {last_cpu:.1f} ms (last); CPU over all turns",
        ),
        Figure("extra", "turn overhead, last/first p50", ratio, "x", target="<= 1.20x"),
        Figure("extra", f"turns of {len(sent)} that waited for a lease hand-off", handoff_turns, "", target="0"),
        Figure("extra", f"log reads not stopped at the first cancel, {len(sent)} turns", late_stops, ""),
        Figure.latency("B6", f"baseline: {fold} (ConversationBuilder, in process)", folds),
        Figure.latency(
            "B6",
            f"takeover, lease expiry -> model request, snapshot ({args.events} ev)",
            ms(from_snapshot),
            baseline_ms=folds,
            baseline_name=fold,
            target="p50 < 250 ms, p99 < 1000 ms",
            cpu_ms_per_op=takeover_cpu,
            note="CPU per takeover includes restarting the harnesses before each kill",
        ),
        Figure.latency(
            "B6",
            f"takeover, snapshot deleted: fold from scratch ({args.events} ev)",
            ms(from_scratch),
            baseline_ms=folds,
            baseline_name=fold,
        ),
        Figure.latency("B6", "lease expiry -> taken over (or removed by the server)", lags),
        Figure.latency("extra", f"first turn after appending {args.events} events (fold from scratch)", first),
        Figure.latency("extra", "per-step cost, POST -> model request, ~100 events", steady_small),
        Figure.latency("extra", f"per-step cost, POST -> model request, ~{args.events} events", steady_big),
        Figure("extra", "harness CPU per step, ~100 events", small_cpu, "ms"),
        Figure("extra", f"harness CPU per step, ~{args.events} events", big_cpu, "ms"),
    ]
    finish(f"Long sessions and B6 on the local stack ({os.cpu_count() or 0} cores)", figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
