"""B5: idle session density, on a private local stack (real NATS, Postgres, services, embedded model).

Creates ``--sessions`` sessions (default 1,000) and opens one SSE stream on each, then leaves them
idle for ``--idle`` seconds (default 60). Prints:

  * the memory each stack process added (PSS from /proc, its descendants included) with every
    session created and its stream open, and the total;
  * the CPU the stack spent over the idle window, as a share of one core, per process;
  * the CPU per session of creating it and opening its stream, per process;

next to the baseline measured in the same run: an idle Python process (``asyncio.sleep``) over the
same window (its PSS and its CPU).

    uv run python bench/idle_sessions.py [--sessions 1000] [--idle 60] [--json PATH]

Targets (reported, not asserted): 1,000 idle sessions with < 200 MB added and < 5 % idle CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from report import Figure, finish, ok, say
from stack_cpu import cpu_ms, memory_kb, per_op, stack_memory_kb

from corral.devstack.ports import Ports
from corral.devstack.stack import Stack

IDLE_PYTHON = "import asyncio, sys; sys.stdout.write('up\\n'); sys.stdout.flush(); asyncio.run(asyncio.sleep(86400))"


def proc_cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


async def open_streams(http: httpx.AsyncClient, ids: list[str]) -> list[asyncio.Task[None]]:
    """One SSE stream per session, read (and dropped) in the background; returns once all answered."""
    ready = [asyncio.Event() for _ in ids]

    async def read(session_id: str, opened: asyncio.Event) -> None:
        async with http.stream("GET", f"/v1/sessions/{session_id}/events/stream") as response:
            if response.status_code != 200:
                raise SystemExit(f"stream of {session_id} answered {response.status_code}")
            opened.set()
            async for _ in response.aiter_raw():
                pass

    tasks = [asyncio.create_task(read(sid, event)) for sid, event in zip(ids, ready, strict=True)]
    waiting: asyncio.Future[list[bool]] = asyncio.gather(*(e.wait() for e in ready))
    watched: set[asyncio.Future[Any]] = {waiting, *tasks}
    done, _ = await asyncio.wait(watched, timeout=300, return_when="FIRST_COMPLETED")
    for task in tasks:
        if task in done and task.exception() is not None:
            raise SystemExit(f"a stream failed: {task.exception()!r}")
    if not all(e.is_set() for e in ready):
        raise SystemExit(f"only {sum(e.is_set() for e in ready)} of {len(ids)} streams opened in 300 s")
    return tasks


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of the idle window")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    n: int = args.sessions

    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        say("starting a private stack ...")
        # one client holds every stream: no rate limit and no cap on connections per client address
        gateway = {"CORRAL_GATEWAY_RATE_LIMIT_RPS": "0", "CORRAL_GATEWAY_MAX_CONNECTIONS_PER_CLIENT": "0"}
        no_limits = {"gateway": gateway}
        stack = Stack(Path(tmp), Ports.free(), environ={}, service_env=no_limits, log_level="WARNING")
        stack.start(timeout=180)
        baseline = subprocess.Popen(  # noqa: ASYNC220 (started once, before any load)
            [sys.executable, "-c", IDLE_PYTHON], stdout=subprocess.PIPE
        )
        try:
            assert baseline.stdout is not None
            baseline.stdout.readline()  # it is up
            limits = httpx.Limits(max_connections=n + 20, max_keepalive_connections=n + 20)
            headers = {"x-api-key": stack.api_key}
            async with httpx.AsyncClient(
                base_url=stack.gateway_url, headers=headers, timeout=120, limits=limits
            ) as http:
                agent = ok(await http.post("/v1/agents", json={"name": "b5", "model": "claude-sonnet-4-6"}))
                env = ok(await http.post("/v1/environments", json={"name": f"b5-{agent['id'].lower()}"}))["id"]
                body = {"agent": agent["id"], "environment_id": env}
                for _ in range(10):  # warm-up: the first requests pay for imports and caches
                    ok(await http.post("/v1/sessions", json=body))
                memory_before = stack_memory_kb(stack)
                cpu_before = cpu_ms(stack)
                say(f"creating {n} sessions and opening a stream on each ...")
                ids = [ok(await http.post("/v1/sessions", json=body))["id"] for _ in range(n)]
                tasks = await open_streams(http, ids)
                setup_cpu = per_op(cpu_before, cpu_ms(stack), n)
                settle = min(5.0, args.idle)
                say(f"{n} streams open; settling {settle:.0f} s, then {args.idle:.0f} s idle ...")
                await asyncio.sleep(settle)  # a measurement window, not synchronisation
                idle_before, base_before, t0 = cpu_ms(stack), proc_cpu_ms(baseline.pid), time.perf_counter()
                await asyncio.sleep(args.idle)  # the idle window being measured
                window_s = time.perf_counter() - t0
                idle_after, base_after = cpu_ms(stack), proc_cpu_ms(baseline.pid)
                memory_after = stack_memory_kb(stack)
                baseline_kb = memory_kb(baseline.pid)
                alive = sum(not t.done() for t in tasks)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            baseline.kill()
            baseline.wait()
            stack.stop()

    if alive != n:
        raise SystemExit(f"only {alive} of {n} streams stayed open through the idle window")
    added_mb = {k: (memory_after[k] - memory_before.get(k, 0)) / 1024 for k in memory_after}
    idle_pct = {k: (idle_after[k] - idle_before.get(k, 0.0)) / (window_s * 10) for k in idle_after}
    figures = [
        Figure("B5", "baseline: idle Python process, PSS", baseline_kb / 1024, "MB"),
        Figure("B5", "baseline: idle Python process, CPU", (base_after - base_before) / (window_s * 10), "% of a core"),
        Figure(
            "B5",
            f"memory added by {n} idle sessions with open streams",
            sum(added_mb.values()),
            "MB",
            n=n,
            baseline=baseline_kb / 1024,
            baseline_name="one idle Python",
            target="< 200 MB at 1,000",
            note="per process: " + ", ".join(f"{k} {v:+.1f} MB" for k, v in sorted(added_mb.items())),
        ),
        Figure(
            "B5",
            f"memory added per idle session ({n})",
            sum(added_mb.values()) * 1024 / n,
            "KB",
            n=n,
        ),
        Figure(
            "B5",
            f"stack CPU while {n} sessions idle ({window_s:.0f} s)",
            sum(idle_pct.values()),
            "% of a core",
            baseline=(base_after - base_before) / (window_s * 10),
            baseline_name="idle Python",
            target="< 5 %",
            note="per process: " + ", ".join(f"{k} {v:.2f} %" for k, v in sorted(idle_pct.items())),
        ),
        Figure(
            "B5",
            "create + open stream, per session",
            sum(setup_cpu.values()),
            "CPU ms",
            n=n,
            cpu_ms_per_op=setup_cpu,
        ),
    ]
    finish(f"B5 on the local stack ({os.cpu_count() or 0} cores)", figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
