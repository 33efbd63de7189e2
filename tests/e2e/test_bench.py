"""``bench/run.py --quick`` runs every benchmark of B1..B7, the cluster comparison and the harness's
capacity end to end, each on its own private stack, prints one table and writes every figure it
promises to its results file. Only a missing figure (or a benchmark that fails) fails: the numbers
themselves are for the reader."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

RUN = Path(__file__).resolve().parents[2] / "bench" / "run.py"

#: (benchmark, the start of a figure's name, whether it reports CPU per operation by process).
FIGURES = (
    ("B1", "baseline: bare SDK tool loop", False),
    ("B1", "tool round trip, Corral", True),
    ("B1", "overhead per tool round trip", False),
    ("B2", "baseline: NATS core publish -> subscribe", False),
    ("B2", "baseline: JetStream publish -> ordered consumer", False),
    ("B2", "emit -> SSE", True),
    ("B2", "POST user.message -> SSE", False),
    ("B3", "baseline: direct model request", False),
    ("B3", "TTFT overhead, agent without tools", True),
    ("B3", "TTFT overhead, toolset, cold", False),
    ("B3", "TTFT overhead, toolset, warm pool, default env", False),
    ("B3", "TTFT overhead, toolset, warm pool, isolated env", False),
    ("B3", "TTFT p50 ratio, toolset cold / no tools", False),
    ("B4", "baseline: docker run", False),
    ("B4", "ready, warm pool, default env", False),
    ("B4", "ready, warm pool, isolated env", False),
    ("B4", "ready, cold", False),
    ("B4", "baseline: docker exec", False),
    ("B4", "exec: execute bash", True),
    ("B4", "exec: execute write 10 KB", False),
    ("B5", "baseline: idle Python process, PSS", False),
    ("B5", "baseline: idle Python process, CPU", False),
    ("B5", "memory added by", False),
    ("B5", "stack CPU while", False),
    ("B5", "create + open stream, per session", True),
    ("B6", "baseline: fold of the same", False),
    ("B6", "takeover, lease expiry -> model request, snapshot", True),
    ("B6", "takeover, snapshot deleted", False),
    ("B7", "baseline: JetStream publish,", False),
    ("B7", "events appended via POST /events", True),
    ("B7", "session creates, sequential, lean client", True),
    ("B7", "session creates, 16 lean clients at once", True),
    ("extra", "NATS messages per session create", False),
    ("cluster", "POST user.message -> SSE, one server", True),
    ("cluster", "POST user.message -> SSE, 3-node cluster R3", True),
    ("cluster", "session creates, sequential, 3-node cluster R3", True),
    ("cluster", "one stream's appends,", True),
    ("cluster", "bare JetStream publishes,", False),
    ("cluster", "NATS CPU per appended event, busiest node, one server", False),
    ("cluster", "NATS CPU per appended event, busiest node, 3-node cluster R3", False),
    ("capacity", "turn overhead, 1 concurrent sessions, one harness", True),
    ("capacity", "harness CPU per turn, 4 sessions", False),
    ("capacity", "turns per harness CPU-second, 4 sessions", False),
    ("capacity", "NATS messages per turn, 1 sessions", False),
    ("capacity", "most concurrent busy sessions", False),
)
#: Processes every stack runs, so every CPU breakdown of a stack operation names them.
STACK = {"gateway", "session-store", "nats", "postgres"}


@pytest.mark.timeout(2400)
def test_every_benchmark_measures_every_figure(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=2350,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    written = list(tmp_path.glob("*-quick.json"))
    assert len(written) == 1, written
    document = json.loads(written[0].read_text())
    assert document["failures"] == [] and document["machine"]["nproc"], document
    figures = document["figures"]
    for bench, name, with_cpu in FIGURES:
        found = [f for f in figures if f["bench"] == bench and f["name"].startswith(name)]
        assert found, f"no {bench} figure {name!r} in {[(f['bench'], f['name']) for f in figures]}"
        figure = found[0]
        assert math.isfinite(figure["value"]), figure
        if not name.startswith("baseline") and figure["baseline"] is not None:
            assert math.isfinite(figure["baseline"]), figure
        if with_cpu:
            assert figure["cpu_ms_per_op"].keys() >= STACK, figure
            assert sum(figure["cpu_ms_per_op"].values()) > 0, figure
        assert f"{figure['name']}" in result.stdout, f"{figure['name']!r} is not in the printed table"
    assert "CPU ms/op by process" in result.stdout
