"""Idle memory of a local stack and the memory of each open SSE stream, on a private ``corral.devstack``
stack (real NATS, Postgres, OpenBao, services, embedded model; no Docker engine).

Prints:

  * each stack process's PSS (``/proc/<pid>/smaps_rollup``, its descendants included: Postgres's
    backends) once the stack is up and idle, the total of Corral's own stack (every process but
    OpenBao, an external server, listed apart), and one idle Python process for scale;
  * with ``--streams N`` (default 500): the PSS each process added when N SSE streams were opened
    (one per session, the sessions created before the first reading), per stream.

    uv run python bench/stack_memory.py [--streams 500] [--harness-count N] [--settle 3] [--json PATH]

Targets (reported, not asserted): the idle stack <= 300 MiB PSS; each open stream <= 16 KB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from idle_sessions import IDLE_PYTHON, open_streams
from report import Figure, finish, ok, say
from stack_cpu import memory_kb, stack_memory_kb

from corral.devstack.ports import Ports
from corral.devstack.stack import Stack

#: Not Corral's code: reported on its own line, and outside the idle stack's total.
EXTERNAL = ("openbao",)


def _listing(kb: dict[str, int | float]) -> str:
    return ", ".join(f"{name} {value / 1024:.1f}" for name, value in sorted(kb.items(), key=lambda kv: -kv[1]))


async def measure(stack: Stack, streams: int, settle: float) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """The stack's PSS idle (after the warm-up), with the first half of ``streams`` streams open,
    and with all of them open."""
    limits = httpx.Limits(max_connections=streams + 20, max_keepalive_connections=streams + 20)
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"x-api-key": stack.api_key}, timeout=120, limits=limits
    ) as http:
        agent = ok(await http.post("/v1/agents", json={"name": "mem", "model": "claude-sonnet-4-6"}))
        env = ok(await http.post("/v1/environments", json={"name": f"mem-{agent['id'].lower()}"}))["id"]
        body = {"agent": agent["id"], "environment_id": env}
        ids = [ok(await http.post("/v1/sessions", json=body))["id"] for _ in range(max(streams, 1))]
        warm = await open_streams(http, ids[:1])  # the first stream pays for imports and caches
        for task in warm:
            task.cancel()
        await asyncio.gather(*warm, return_exceptions=True)
        await asyncio.sleep(settle)  # a measurement window, not synchronisation
        idle = stack_memory_kb(stack)
        if streams == 0:
            return idle, idle, idle
        say(f"opening {streams} streams ...")
        half = streams // 2
        tasks = await open_streams(http, ids[:half]) if half else []
        await asyncio.sleep(settle)  # a measurement window, not synchronisation
        halfway = stack_memory_kb(stack)
        tasks += await open_streams(http, ids[half:streams])
        await asyncio.sleep(settle)  # a measurement window, not synchronisation
        loaded = stack_memory_kb(stack)
        alive = sum(not t.done() for t in tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if alive != streams:
        raise SystemExit(f"only {alive} of {streams} streams stayed open")
    return idle, halfway, loaded


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--harness-count", type=int, default=None, help="default: the stack's (make up's)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before each reading")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    n: int = args.streams

    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        say("starting a private stack ...")
        # every stream comes from this one address: no per-client connection limit
        gateway = {"CORRAL_GATEWAY_RATE_LIMIT_RPS": "0", "CORRAL_GATEWAY_MAX_CONNECTIONS_PER_CLIENT": "0"}
        stack = Stack(
            Path(tmp),
            Ports.free(),
            environ={},
            service_env={"gateway": gateway},
            harness_count=args.harness_count,
            log_level="WARNING",
        )
        stack.start(timeout=180)
        baseline = subprocess.Popen(  # noqa: ASYNC220 (started once, before any load)
            [sys.executable, "-c", IDLE_PYTHON], stdout=subprocess.PIPE
        )
        try:
            assert baseline.stdout is not None
            baseline.stdout.readline()  # it is up
            idle, halfway, loaded = await measure(stack, n, args.settle)
            baseline_kb = memory_kb(baseline.pid)
        finally:
            baseline.kill()
            baseline.wait()
            stack.stop()

    ours = {k: v for k, v in idle.items() if k not in EXTERNAL}
    figures = [
        Figure("extra", "baseline: idle Python process, PSS", baseline_kb / 1024, "MB"),
        Figure(
            "extra",
            f"idle stack PSS, every process but OpenBao ({stack.harness_count} harness)",
            sum(ours.values()) / 1024,
            "MB",
            baseline=baseline_kb / 1024,
            baseline_name="one idle Python",
            target="<= 300 MiB",
            note="MB per process: " + _listing(dict(ours)),
        ),
        *(Figure("extra", f"idle PSS, {name} (external)", idle.get(name, 0) / 1024, "MB") for name in EXTERNAL),
    ]
    if n:
        added = {k: loaded[k] - idle.get(k, 0) for k in loaded}
        figures.append(
            Figure(
                "extra",
                f"PSS added per open SSE stream ({n} streams, one per session)",
                sum(added.values()) / n,
                "KB",
                n=n,
                target="<= 16 KB",
                note="KB per stream: " + ", ".join(f"{k} {v / n:+.1f}" for k, v in sorted(added.items())),
            )
        )
        second = n - n // 2
        more = {k: loaded[k] - halfway.get(k, 0) for k in loaded}
        figures.append(
            Figure(
                "extra",
                f"PSS added per open SSE stream, the second {second} alone",
                sum(more.values()) / second,
                "KB",
                n=second,
                target="<= 16 KB",
                note="KB per stream: " + ", ".join(f"{k} {v / second:+.1f}" for k, v in sorted(more.items())),
            )
        )
    for figure in figures:
        if figure.note:
            say(f"{figure.name}: {figure.note}")
    finish(f"stack memory on the local stack ({os.cpu_count() or 0} cores)", figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
