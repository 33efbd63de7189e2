"""``bench/core_flow.py`` runs end to end on its own private stack and prints every figure it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench" / "core_flow.py"
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
