"""``bench/core_flow.py`` and ``bench/sandbox.py`` run end to end, each on its own private stack, and
print every figure they promise. Only a missing figure fails: the numbers are for the reader."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench" / "core_flow.py"
SANDBOX_BENCH = BENCH.with_name("sandbox.py")
FIGURE = r"p50\s+(\d+\.\d+) ms\s+p99\s+(\d+\.\d+) ms"


@pytest.mark.timeout(300)
def test_the_core_flow_benchmark_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--sessions", "3", "--samples", "10", "--creates", "100"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for label in (
        "baseline: NATS core publish -> subscribe",
        "baseline: JetStream publish -> ordered consumer",
        "B2 emit -> SSE",
        "POST user.message -> SSE",
    ):
        found = re.search(re.escape(label) + r".*?" + FIGURE, out)
        assert found, f"no figure for {label!r} in:\n{out}"
        p50, p99 = float(found[1]), float(found[2])
        assert 0 < p50 <= p99, (label, p50, p99)
    for label in ("session creates, sequential, httpx client", "session creates, sequential, lean client"):
        found = re.search(re.escape(label) + r"\s+(\d+\.\d+) /s", out)
        assert found and float(found[1]) > 0, f"no rate for {label!r} in:\n{out}"
    cpu = re.search(r"CPU per create: (.*)", out)
    assert cpu, out
    spent = dict(re.findall(r"([\w-]+) (\d+\.\d+) ms", cpu[1]))
    assert {"session-store", "gateway"} <= spent.keys(), cpu[1]
    assert all(float(ms) > 0 for ms in spent.values()), cpu[1]


#: Every line ``bench/sandbox.py`` prints with a p50/p99 figure (the README's second block).
SANDBOX_FIGURES = (
    "baseline: docker run --rm --network none true",
    "B4 ready, warm pool, default env (provision RPC)",
    "B4 ready, warm pool, isolated env (provision RPC)",
    "B4 ready, cold, pool size 0 (provision RPC)",
    "baseline: docker exec bash -c 'echo hi'",
    "B4 exec: execute bash 'echo hi' over the bus",
    "B4 exec: execute write 10 KB over the bus",
    "B3 overhead, agent without tools",
    "B3 overhead, toolset, cold + egress (default)",
    "B3 overhead, toolset, warm pool, default env",
    "B3 overhead, toolset, warm pool, isolated env",
)
SANDBOX_RATIOS = (
    "B3 TTFT p50 ratio, toolset cold / no tools",
    "B3 TTFT p50 ratio, toolset warm default / none",
    "B3 TTFT p50 ratio, toolset warm isolated / none",
)


@pytest.mark.timeout(900)
def test_the_sandbox_benchmark_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, str(SANDBOX_BENCH), "--samples", "3", "--execs", "10"],
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"on the local stack with Docker \((\d+) cores\)", out), out
    for label in SANDBOX_FIGURES:
        found = re.search(re.escape(label) + r"\s+p50\s+(\d+\.\d+) ms\s+p99\s+(\d+\.\d+) ms", out)
        assert found, f"no figure for {label!r} in:\n{out}"
    for label in SANDBOX_RATIOS:
        found = re.search(re.escape(label) + r"\s+(\d+\.\d+)", out)
        assert found and float(found[1]) > 0, f"no ratio for {label!r} in:\n{out}"
