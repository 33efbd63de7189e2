"""How many sessions one harness process carries: ``--levels`` rounds of N concurrent sessions on a
private local stack with one harness (services, embedded model, no Docker), each session running quick
scripted turns back to back (POST user.message, the reply "ok", wait for idle, again) for
``--seconds``. Per level:

  * turn overhead, POST -> the model request reaching the embedded model, p50/p99 over every turn of
    every session (the same figure as long_session.py's);
  * turns per second (all sessions), the harness's CPU per turn (from /proc: steadier than wall time on
    a shared machine) and the share of one core the harness used over the window;
  * turns per harness CPU-second (1000 / CPU ms per turn).

The harness runs ``--levels``' largest N at once (``CORRAL_HARNESS_CONCURRENCY``), so the level, not
the setting (default 8), is what limits it. A quick turn keeps its session busy all the time: a real
session spends seconds in the model between requests, so it loads the harness far less (the README's
capacity guide derives sessions per core from the CPU per turn).

With ``--pause-ms``, each session waits that long after a turn's end before its next message, so
the harness has let the session go and takes its lease again for every turn (back to back, most
turns join the run still holding the session).

    uv run python bench/harness_capacity.py [--levels 1 4 8 16 32] [--seconds 15] [--pause-ms 0] [--json PATH]

Target (reported, not asserted): turn overhead p50 <= 15 ms.
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
from long_session import QUICK, Session, new_session, overhead
from report import Figure, finish, ok, pct, say
from session_creates import nats_messages
from stack_cpu import cpu_ms, per_op, spent

from corral.devstack.ports import Ports
from corral.devstack.stack import Stack

TARGET_MS = 15.0


@dataclass
class Level:
    sessions: int
    seconds: float
    turns: int
    overhead_ms: list[float]
    cpu: dict[str, float]
    """CPU ms per turn of each process."""
    harness_ms: float
    """The harness's CPU ms over the window."""
    messages: float
    """NATS messages per turn, sent + received by every client connection (NATS's ``/connz``): a
    count the machine's load does not move."""
    pause_ms: float = 0.0
    """Each session's pause between a turn's end and its next message."""

    @property
    def harness_per_turn(self) -> float:
        return self.harness_ms / max(1, self.turns)

    @property
    def core_share(self) -> float:
        return self.harness_ms / (self.seconds * 1000)


async def run_level(
    stack: Stack,
    http: httpx.AsyncClient,
    model: httpx.AsyncClient,
    agent_env: tuple[str, str],
    n: int,
    seconds: float,
    pause_s: float = 0.0,
) -> Level:
    opened = [await new_session(http, model, agent_env, [QUICK]) for _ in range(n)]
    sessions = [s for s, _ in opened]
    try:
        await asyncio.gather(*(s.turn(f"{s.scenario} warm-up") for s in sessions))
        sent: dict[str, list[float]] = {s.id: [] for s in sessions}

        async def drive(session: Session, stop: float) -> None:
            while time.perf_counter() < stop:
                sent[session.id].append(await session.turn(f"turn {len(sent[session.id])}"))
                await asyncio.sleep(pause_s)

        async with httpx.AsyncClient(timeout=30) as monitor:
            sent_before = sum((await nats_messages(monitor, stack.nats_monitor_url)).values())
            before = cpu_ms(stack)
            began = time.perf_counter()
            await asyncio.gather(*(drive(s, began + seconds) for s in sessions))
            took = time.perf_counter() - began
            after = cpu_ms(stack)
            moved = sum((await nats_messages(monitor, stack.nats_monitor_url)).values()) - sent_before
        turns = sum(len(times) for times in sent.values())
        samples: list[float] = []
        for session in sessions:
            samples.extend(await overhead(session, sent[session.id]))
    finally:
        for _, reader in opened:
            reader.cancel()
        await asyncio.gather(*(reader for _, reader in opened), return_exceptions=True)
    cpu = per_op(before, after, turns)
    return Level(n, took, turns, samples, cpu, spent(before, after, "harness"), moved / max(1, turns), pause_s * 1000)


def figures_of(levels: list[Level]) -> list[Figure]:
    out: list[Figure] = []
    for level in levels:
        n = level.sessions
        out += [
            Figure.latency(
                "capacity",
                f"turn overhead, {n} concurrent sessions, one harness"
                + (f", {level.pause_ms:.0f} ms between turns" if level.pause_ms else ""),
                level.overhead_ms,
                target=f"p50 <= {TARGET_MS:.0f} ms",
                cpu_ms_per_op=level.cpu,
                note=(
                    f"{level.turns / level.seconds:.1f} turns/s; harness used {level.core_share:.0%} of one core; "
                    "CPU per turn by process"
                ),
            ),
            Figure("capacity", f"harness CPU per turn, {n} sessions", level.harness_per_turn, "ms", n=level.turns),
            Figure(
                "capacity",
                f"turns per harness CPU-second, {n} sessions",
                1000 / level.harness_per_turn if level.harness_per_turn else float("nan"),
                "turns/s",
            ),
            Figure("capacity", f"harness share of one core, {n} sessions", level.core_share * 100, "%"),
            Figure(
                "capacity",
                f"NATS messages per turn, {n} sessions (sent + received by the clients)",
                level.messages,
                "msgs",
                n=level.turns,
            ),
        ]
    within = [lv.sessions for lv in levels if pct(lv.overhead_ms, 0.5) <= TARGET_MS]
    out.append(
        Figure(
            "capacity",
            f"most concurrent busy sessions with turn overhead p50 <= {TARGET_MS:.0f} ms",
            float(max(within, default=0)),
            "sessions",
            note=f"of the levels {[lv.sessions for lv in levels]}; 0: none of them (read it with the machine's load)",
        )
    )
    return out


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16, 32], help="concurrent sessions")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each level runs turns")
    parser.add_argument(
        "--pause-ms",
        type=float,
        default=0.0,
        help="each session's pause between a turn's end and its next message (0: at once, as the run ends; "
        "a pause lets the harness let the session go first, as when a person reads the reply)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    most = max(args.levels)

    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        say("starting a private stack with one harness ...")
        service_env = {
            "gateway": {"CORRAL_GATEWAY_RATE_LIMIT_RPS": "0"},
            "harness": {"CORRAL_HARNESS_CONCURRENCY": str(most)},
            # every turn of every level stays recorded, for the overhead
            "embedded-model": {"CORRAL_EMBEDDED_MODEL_MAX_RECORDED_REQUESTS": "100000"},
        }
        stack = Stack(Path(tmp), Ports.free(), service_env=service_env, harness_count=1, log_level="WARNING")
        stack.start(timeout=180)
        levels: list[Level] = []
        try:
            headers = {"x-api-key": stack.api_key}
            limits = httpx.Limits(max_connections=2 * most + 10, max_keepalive_connections=2 * most + 10)
            async with (
                httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=60, limits=limits) as http,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.embedded_model}", timeout=60) as model,
            ):
                agent = ok(await http.post("/v1/agents", json={"name": "capacity", "model": "claude-sonnet-4-6"}))
                env = ok(await http.post("/v1/environments", json={"name": f"cap-{agent['id'].lower()}"}))
                for n in args.levels:
                    say(f"{n} concurrent sessions for {args.seconds:.0f} s ...")
                    levels.append(
                        await run_level(
                            stack, http, model, (agent["id"], env["id"]), n, args.seconds, args.pause_ms / 1000
                        )
                    )
        finally:
            stack.stop()

    finish(f"Harness capacity on the local stack ({os.cpu_count() or 0} cores)", figures_of(levels), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
